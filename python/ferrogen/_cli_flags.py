"""The generation config fields as ``ferrogen generate`` flags: groups, one-line help, suggestions.

The help text is not a second copy of the field documentation: it is the first sentence of the
field's entry in transformers' ``GenerationConfig`` docstring (read from its source file, without
importing transformers), or of its bullet in ferrogen's ``GenerationConfig`` docstring for the
fields transformers 5.x no longer documents and for ferrogen's own extras.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional

PREFIX = "cfg_"  # argparse dest prefix of a config field flag

# How --help groups the fields (presentation only); a field not named here lands in "other".
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("length", ("max_new_tokens", "max_length", "min_new_tokens", "min_length", "max_time", "stop_strings")),
    ("strategy", ("do_sample", "num_beams", "penalty_alpha", "dola_layers", "seed", "num_return_sequences")),
    ("sampling", ("temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff",
                  "eta_cutoff")),
    ("llama.cpp / vLLM samplers", ("presence_penalty", "frequency_penalty", "penalty_last_n", "logit_bias",
                                   "allowed_token_ids", "dry_multiplier", "dry_base", "dry_allowed_length",
                                   "dry_sequence_breakers", "dry_penalty_last_n", "xtc_probability",
                                   "xtc_threshold", "top_n_sigma", "dynatemp_range", "dynatemp_exponent",
                                   "mirostat_mode", "mirostat_tau", "mirostat_eta", "sampler_order")),
    ("penalties and token rules", ("repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size",
                                   "encoder_no_repeat_ngram_size", "bad_words_ids", "sequence_bias",
                                   "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
                                   "forced_bos_token_id", "forced_eos_token_id", "renormalize_logits",
                                   "remove_invalid_values")),
    ("beams", ("early_stopping", "length_penalty", "num_beam_groups", "diversity_penalty", "force_words",
               "force_words_ids", "constraints", "low_memory", "output_beam_tree")),
    ("output", ("output_scores", "output_logits", "return_dict_in_generate")),
    ("structured output (--json-schema and --grammar take a file or the text)",
     ("json_schema", "regex", "grammar", "choices")),
    ("special tokens", ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")),
    ("assisted decoding", ("prompt_lookup_num_tokens", "max_matching_ngram_size", "num_assistant_tokens",
                           "num_assistant_tokens_schedule", "assistant_confidence_threshold",
                           "assistant_lookbehind", "target_lookbehind", "assistant_ensemble_weight",
                           "is_assistant", "speculation_type")),
]
REFUSED_TITLE = ("read from generation_config.json but not carried out: ferrogen stops with an error when "
                 "one asks for its feature (GenerationConfig.unsupported_settings)")


def config_defaults() -> dict[str, Any]:
    from .config import GenerationConfig

    return GenerationConfig().to_dict()


def refused_fields() -> list[str]:
    """Fields :meth:`GenerationConfig.unsupported_settings` can name (values that ask for a feature
    ferrogen does not carry out)."""
    from .config import _NOT_CARRIED_OUT

    return list(_NOT_CARRIED_OUT)


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _docstring_entries(doc: str) -> dict[str, str]:
    """``{name: text}`` for each ``name (`type`, ...):`` entry of a Google-style docstring, text unwrapped."""
    entries: dict[str, list[str]] = {}
    current: Optional[str] = None
    indent = -1
    for line in doc.splitlines():
        header = re.match(r"^(\s*)(\w+):?\s*\((`?)", line)
        depth = len(line) - len(line.lstrip())
        if header and (depth == indent or (indent < 0 and header.group(3))):
            indent, current = depth, header.group(2)
            entries[current] = []
        elif current is not None and line.strip() and depth > indent:
            entries[current].append(line.strip())
        elif line.strip():
            current = None
    return {name: " ".join(words) for name, words in entries.items() if words}


def _bullet_entries(doc: str) -> dict[str, str]:
    """``{name: text}`` for each ``- ``name``: text`` bullet (text unwrapped)."""
    entries: dict[str, str] = {}
    for match in re.finditer(r"^\s*- ``(\w+)``: (.*(?:\n(?!\s*- |\s*$).*)*)", doc, re.M):
        entries[match.group(1)] = " ".join(match.group(2).split())
    return entries


def _transformers_doc() -> str:
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return ""
    path = Path(list(spec.submodule_search_locations)[0]) / "generation" / "configuration_utils.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return ""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "GenerationConfig":
            return ast.get_docstring(node) or ""
    return ""


def _first_sentence(text: str) -> str:
    text = re.sub(r"\[`~?(?:[\w.]+\.)?(\w+)`\]", r"\1", text)  # [`~generation.X`] -> X
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)  # [text](link) -> text
    text = text.replace("``", "").replace("`", "")
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = (match.group(1) if match else text).strip()
    return sentence[:1].upper() + sentence[1:]


def field_docs() -> dict[str, str]:
    """One-line documentation of every field: transformers' entry, else ferrogen's own bullet."""
    from .config import GenerationConfig

    docs = {name: _first_sentence(text) for name, text in _docstring_entries(_transformers_doc()).items()}
    docs.update({name: _first_sentence(text) for name, text in _bullet_entries(GenerationConfig.__doc__ or "").items()})
    return docs


def add_config_flags(parser: argparse.ArgumentParser, with_docs: bool) -> None:
    """One flag per config field, grouped; ``with_docs`` fills in the help text (only --help needs it)."""
    defaults = config_defaults()
    docs = field_docs() if with_docs else {}
    refused = set(refused_fields())
    placed: set[str] = set()
    layout = [(title, [f for f in names if f in defaults and f not in refused]) for title, names in GROUPS]
    for _, names in layout:
        placed.update(names)
    layout.append(("other", [f for f in defaults if f not in placed and f not in refused]))
    layout.append((REFUSED_TITLE, [f for f in defaults if f in refused]))
    for title, names in layout:
        group = parser.add_argument_group(f"generation config: {title}")
        for name in names:
            default = defaults[name]
            help_text = docs.get(name, "") + ("" if default is None else f" (default: {json.dumps(default)})")
            help_text = help_text.replace("%", "%%")  # argparse formats help with %
            kwargs: dict[str, Any] = dict(dest=PREFIX + name, help=help_text.strip() or None)
            if isinstance(default, bool):
                group.add_argument(flag_name(name), nargs="?", const="true", metavar="BOOL", **kwargs)
            else:
                group.add_argument(flag_name(name), metavar="VALUE", **kwargs)


def parse_value(text: str) -> Any:
    """Flag values are JSON when they parse as JSON (numbers, lists, true/false/null), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# Output constraints: --json-schema and --grammar may name a file holding the value; a grammar
# or a regex is text as given (never parsed as JSON: "[0-9]" is a regex, not a list).
_FILE_FIELDS = frozenset({"json_schema", "grammar"})
_RAW_FIELDS = frozenset({"grammar", "regex"})


def _field_value(name: str, text: str) -> Any:
    if name in _FILE_FIELDS and os.path.isfile(text):
        with open(text, encoding="utf-8") as fh:
            text = fh.read()
    return text if name in _RAW_FIELDS else parse_value(text)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line."""
    return {k[len(PREFIX):]: _field_value(k[len(PREFIX):], v) for k, v in vars(args).items()
            if k.startswith(PREFIX) and v is not None}


def unknown_options_message(extras: Iterable[str], parser: argparse.ArgumentParser) -> str:
    """``unrecognized arguments: --top-pp 0.5 (did you mean '--top-p'?)``, with the suggestion rule
    the Python API uses for unknown config fields."""
    from ._validation import did_you_mean

    extras = list(extras)
    known = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    hints = "".join(did_you_mean(e.split("=", 1)[0], known) for e in extras if e.startswith("--"))
    return f"unrecognized arguments: {' '.join(extras)}{hints}"
