"""GenerationConfig: every knob of transformers' ``generate()``, validated, JSON round-trip, mode selection.

Defaults are transformers' classic effective defaults (``max_length=20``, ``top_k=50``, ...);
``None`` passed for a field that has a non-``None`` default means "use the default", as in
transformers 5.x. Field meanings follow transformers' ``GenerationConfig`` documentation;
ferrogen adds ``seed``, ``output_beam_tree``, ``force_words`` and the output constraints
``json_schema``, ``regex``, ``grammar`` and ``choices``.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping

from . import _validation as _v
from ._validation import GenerationConfigError, GenerationConfigTypeError, UnknownFieldError

__all__ = ["GenerationConfig", "GenerationConfigError", "GenerationConfigTypeError", "GenerationMode",
           "UnknownFieldError"]

CONFIG_NAME = "generation_config.json"
# keys transformers writes for its own bookkeeping; ignored when loading
_BOOKKEEPING_KEYS = frozenset({"transformers_version", "_from_model_config", "_commit_hash"})


class GenerationMode(str, Enum):
    """The decoding strategy a config selects (see :meth:`GenerationConfig.generation_mode`).

    Example:
        >>> GenerationConfig(do_sample=True).generation_mode() is GenerationMode.SAMPLE
        True
    """

    GREEDY = "greedy"
    SAMPLE = "sample"
    BEAM_SEARCH = "beam_search"
    BEAM_SAMPLE = "beam_sample"
    GROUP_BEAM_SEARCH = "group_beam_search"
    CONSTRAINED_BEAM_SEARCH = "constrained_beam_search"
    CONTRASTIVE_SEARCH = "contrastive_search"
    ASSISTED = "assisted"
    DOLA = "dola_generation"


def _field(default: Any, check: _v.Checker) -> Any:
    """A dataclass field with its default and the checker that validates and canonicalises it."""
    return field(default=default, metadata={"check": check})


@dataclass(init=False, repr=False, eq=False)
class GenerationConfig:
    """Settings for one ``generate()`` call; validated whenever it is built or updated.

    Accepts every field transformers 4.x and 5.x know (including those 5.x moved to the Hub:
    ``penalty_alpha``, ``num_beam_groups``, ``diversity_penalty``, ``constraints``,
    ``force_words_ids``, ``low_memory``, ``dola_layers``) plus ferrogen's extras:

    - ``seed``: seed of the per-row sampling generator (``None``: drawn from torch's global one).
    - ``output_beam_tree``: also return every beam's parent pointers and scores (implies
      ``return_dict_in_generate``).
    - ``force_words``: words (str, or a list of str for "one of these") to force; resolved into
      ``force_words_ids`` with a tokenizer before generation.
    - ``json_schema``: the output is JSON valid under this JSON Schema (a dict or its JSON text; a
      list gives one per prompt). Needs ``tokenizer=`` (see ``docs/strategies.md``, "Structured
      output"). At most one of ``json_schema``, ``regex``, ``grammar``, ``choices``.
    - ``regex``: the whole output matches this regular expression (a list: one per prompt).
    - ``grammar``: the output matches this grammar, in llguidance's Lark syntax (a list: one per prompt).
    - ``choices``: the output is one of these strings (a list of lists: one list per prompt).

    Samplers of llama.cpp, vLLM and text-generation-webui (formulas and references in
    ``docs/samplers.md``):

    - ``presence_penalty``: subtracted once from every token already generated (vLLM).
    - ``frequency_penalty``: subtracted from a generated token once per occurrence (vLLM).
    - ``penalty_last_n``: count the last n tokens, prompt included, instead of the generated ones.
    - ``logit_bias``: ``{token id: bias}`` added to the logits.
    - ``allowed_token_ids``: only these tokens may be generated.
    - ``dry_multiplier``: DRY's penalty scale (0 = off).
    - ``dry_base``: DRY's penalty grows as base^(repeat length - allowed length).
    - ``dry_allowed_length``: repeats up to this long are not penalised by DRY.
    - ``dry_sequence_breakers``: strings (encoded with the tokenizer) or token-id lists that end a DRY match.
    - ``dry_penalty_last_n``: DRY looks at the last n tokens (default: the whole row).
    - ``xtc_probability``: chance per step that XTC removes the top choices (0 = off).
    - ``xtc_threshold``: XTC removes tokens at least this probable, except the least probable of them.
    - ``top_n_sigma``: keep tokens whose logit is within n standard deviations of the maximum.
    - ``dynatemp_range``: the temperature varies by up to this much with the entropy (0 = off).
    - ``dynatemp_exponent``: exponent of the normalised entropy in the dynamic temperature.
    - ``mirostat_mode``: 1 or 2 for mirostat v1 / v2 (0 = off; only the temperature runs before it).
    - ``mirostat_tau``: mirostat's target surprise, in bits.
    - ``mirostat_eta``: mirostat's learning rate.
    - ``sampler_order``: the warpers' order: "transformers" (default), "llama.cpp" (its default chain: top_n_sigma, top_k, typical_p, top_p, min_p, xtc, temperature) or stage names; stages not named do not run.

    Each field means what transformers' ``GenerationConfig`` documents; for the fields its 5.x
    documentation no longer describes (``ferrogen generate --help`` reads both lists):

    - ``num_beam_groups``: number of groups to divide ``num_beams`` into for diverse beam search.
    - ``diversity_penalty``: subtracted from a beam's score for each token another group chose at
      the same step (group beam search only).
    - ``penalty_alpha``: weight of the degeneration penalty in contrastive search (with ``top_k > 1``).
    - ``force_words_ids``: token ids that must appear (a list of lists; a third level of nesting
      means "one of these").
    - ``constraints``: ``Constraint`` objects the output must satisfy (constrained beam search).
    - ``low_memory``: run beam search and contrastive search one row at a time to lower peak memory.
    - ``dola_layers``: layers to contrast for DoLa decoding ("low", "high" or a list of indices).
    - ``return_legacy_cache``: return the key/value cache in the legacy tuple format.
    - ``prefill_chunk_size``: feed the prompt to the model in chunks of this many tokens.
    - ``forced_decoder_ids``: pairs ``[position, token id]`` forced at those decoder positions.
    - ``continuous_batching_config``: settings of transformers' continuous-batching generation.
    - ``generation_kwargs``: extra keyword arguments passed on to ``generate``.

    An unknown keyword raises ``TypeError`` naming it; an invalid value raises
    :class:`GenerationConfigError` (a ``ValueError``; :class:`GenerationConfigTypeError` for a wrong
    type, also a ``TypeError``) whose message starts with the field name.

    Example:
        >>> cfg = GenerationConfig(max_new_tokens=5, num_beams=4)
        >>> cfg, cfg.generation_mode().value
        (GenerationConfig(max_new_tokens=5, num_beams=4), 'beam_search')
        >>> GenerationConfig(top_p=1.5)
        Traceback (most recent call last):
        ...
        ferrogen._validation.GenerationConfigError: top_p: must be in (0, 1], got 1.5
    """

    # Each field names its default and its checker. Checkers give a value its canonical type;
    # the ranges of the fields the core reads (_v.number, _v.integer) and the rules that tie
    # fields together are the core's (`_core.GenerationSettings`), which validate() calls.
    # length of the output
    max_length: int = _field(20, _v.int_field(0, _v.LENGTH_LIMIT))
    max_new_tokens: int | None = _field(None, _v.int_field(1, _v.LENGTH_LIMIT))
    min_length: int = _field(0, _v.int_field(0, _v.LENGTH_LIMIT))
    min_new_tokens: int | None = _field(None, _v.int_field(0, _v.LENGTH_LIMIT))
    early_stopping: bool | str = _field(False, _v.early_stopping)
    max_time: float | None = _field(None, _v.float_field(0.0, low_open=True))
    stop_strings: str | list[str] | None = _field(None, _v.stop_strings)
    # strategy
    do_sample: bool = _field(False, _v.bool_field)
    num_beams: int = _field(1, _v.integer)
    num_beam_groups: int = _field(1, _v.integer)
    penalty_alpha: float | None = _field(None, _v.float_field(0.0, 1.0))
    dola_layers: str | list[int] | None = _field(None, _v.dola_layers)
    use_mtp: bool = _field(False, _v.bool_field)
    # cache
    use_cache: bool = _field(True, _v.bool_field)
    cache_implementation: str | None = _field(None, _v.str_field)
    cache_config: Any = _field(None, _v.any_field)
    max_cache_len: int | None = _field(None, _v.int_field(1))
    return_legacy_cache: bool | None = _field(None, _v.bool_field)
    prefill_chunk_size: int | None = _field(None, _v.int_field(1))
    low_memory: bool | None = _field(None, _v.bool_field)
    # logits processors and warpers
    temperature: float = _field(1.0, _v.number)
    top_k: int = _field(50, _v.int_field(0))
    top_p: float = _field(1.0, _v.number)
    min_p: float | None = _field(None, _v.number)
    top_h: float | None = _field(None, _v.number)
    typical_p: float = _field(1.0, _v.number)
    epsilon_cutoff: float = _field(0.0, _v.number)
    eta_cutoff: float = _field(0.0, _v.number)
    diversity_penalty: float = _field(0.0, _v.number)
    repetition_penalty: float = _field(1.0, _v.number)
    encoder_repetition_penalty: float = _field(1.0, _v.number)
    length_penalty: float = _field(1.0, _v.number)
    no_repeat_ngram_size: int = _field(0, _v.int_field(0))
    encoder_no_repeat_ngram_size: int = _field(0, _v.int_field(0))
    bad_words_ids: list[list[int]] | None = _field(None, _v.bad_words_ids)
    force_words_ids: list | None = _field(None, _v.force_words_ids)
    constraints: list | None = _field(None, _v.constraints)
    renormalize_logits: bool = _field(False, _v.bool_field)
    forced_bos_token_id: int | None = _field(None, _v.int_field(0))
    forced_eos_token_id: int | list[int] | None = _field(None, _v.one_or_more_ids)
    remove_invalid_values: bool = _field(False, _v.bool_field)
    exponential_decay_length_penalty: tuple[int, float] | None = _field(None, _v.exponential_decay)
    suppress_tokens: list[int] | None = _field(None, _v._id_list)
    begin_suppress_tokens: list[int] | None = _field(None, _v._id_list)
    forced_decoder_ids: list[list[int | None]] | None = _field(None, _v.forced_decoder_ids)
    sequence_bias: dict[tuple[int, ...], float] | None = _field(None, _v.sequence_bias)
    token_healing: bool = _field(False, _v.bool_field)
    guidance_scale: float | None = _field(None, _v.float_field())
    watermarking_config: Any = _field(None, _v.any_field)
    # samplers from llama.cpp / vLLM / text-generation-webui (docs/samplers.md)
    presence_penalty: float = _field(0.0, _v.number)
    frequency_penalty: float = _field(0.0, _v.number)
    penalty_last_n: int | None = _field(None, _v.int_field(1))
    logit_bias: dict[int, float] | None = _field(None, _v.logit_bias)
    allowed_token_ids: list[int] | None = _field(None, _v.allowed_token_ids)
    dry_multiplier: float = _field(0.0, _v.number)
    dry_base: float = _field(1.75, _v.number)
    dry_allowed_length: int = _field(2, _v.int_field(1))
    dry_sequence_breakers: list[str | list[int]] | None = _field(None, _v.dry_sequence_breakers)
    dry_penalty_last_n: int | None = _field(None, _v.int_field(1))
    xtc_probability: float = _field(0.0, _v.number)
    xtc_threshold: float = _field(0.1, _v.number)
    top_n_sigma: float | None = _field(None, _v.number)
    dynatemp_range: float = _field(0.0, _v.number)
    dynatemp_exponent: float = _field(1.0, _v.number)
    mirostat_mode: int = _field(0, _v.int_field(0))
    mirostat_tau: float = _field(5.0, _v.number)
    mirostat_eta: float = _field(0.1, _v.number)
    sampler_order: str | None = _field(None, _v.sampler_order)
    # outputs
    num_return_sequences: int = _field(1, _v.integer)
    output_attentions: bool = _field(False, _v.bool_field)
    output_hidden_states: bool = _field(False, _v.bool_field)
    output_scores: bool = _field(False, _v.bool_field)
    output_logits: bool = _field(False, _v.bool_field)
    return_dict_in_generate: bool = _field(False, _v.bool_field)
    # special tokens
    pad_token_id: int | None = _field(None, _v.int_field(0))
    bos_token_id: int | None = _field(None, _v.int_field(0))
    eos_token_id: int | list[int] | None = _field(None, _v.one_or_more_ids)
    decoder_start_token_id: int | list[int] | None = _field(None, _v.one_or_more_ids)
    # assisted decoding
    is_assistant: bool = _field(False, _v.bool_field)
    num_assistant_tokens: int = _field(20, _v.int_field(1))
    num_assistant_tokens_schedule: str = _field("constant", _v.choice(_v.ASSISTANT_SCHEDULES))
    assistant_confidence_threshold: float = _field(0.4, _v.float_field(0.0, 1.0))
    prompt_lookup_num_tokens: int | None = _field(None, _v.int_field(1))
    max_matching_ngram_size: int | None = _field(None, _v.int_field(1))
    assistant_early_exit: int | None = _field(None, _v.int_field(1))
    assistant_lookbehind: int = _field(10, _v.int_field(0))
    target_lookbehind: int = _field(10, _v.int_field(0))
    assistant_ensemble_weight: float | None = _field(None, _v.float_field(0.0, 1.0, low_open=True,
                                                                          high_open=True))
    speculation_type: str | None = _field(None, _v.str_field)
    # performance
    compile_config: Any = _field(None, _v.any_field)
    disable_compile: bool = _field(False, _v.bool_field)
    continuous_batching_config: Any = _field(None, _v.any_field)
    generation_kwargs: dict[str, Any] | None = _field(None, _v.dict_field)
    # ferrogen extras
    seed: int | None = _field(None, _v.int_field(0, _v.SEED_LIMIT))
    output_beam_tree: bool = _field(False, _v.bool_field)
    force_words: list | None = _field(None, _v.force_words)
    json_schema: Any = _field(None, _v.json_schema)
    regex: str | list[str] | None = _field(None, _v.regex)
    grammar: str | list[str] | None = _field(None, _v.grammar)
    choices: list[Any] | None = _field(None, _v.choices)

    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - _DEFAULTS.keys()
        if unknown:
            raise _v.unknown_fields_error(unknown, _DEFAULTS)
        for name, default in _DEFAULTS.items():
            value = kwargs.get(name)
            value = copy.deepcopy(default) if value is None else value
            setattr(self, name, _v.check_field(_CHECKS[name], name, value, default))
        _v.check_combinations(self)

    def validate(self) -> None:
        """Check every field and combination; raise :class:`GenerationConfigError` if invalid.

        Sampling-only knobs with ``do_sample=False`` (beam-only knobs with ``num_beams=1``) only
        warn, as in transformers. Construction and :meth:`update` validate already; call this
        after assigning attributes directly.

        Example:
            >>> cfg = GenerationConfig()
            >>> cfg.num_beams = 0
            >>> cfg.validate()
            Traceback (most recent call last):
            ...
            ferrogen._validation.GenerationConfigError: num_beams: must be >= 1, got 0
        """
        for name, default in _DEFAULTS.items():
            _v.check_field(_CHECKS[name], name, getattr(self, name), default)
        _v.check_combinations(self)

    @property
    def dry_sequence_breaker_ids(self) -> list[list[int]] | None:
        """``dry_sequence_breakers`` as token ids (what the core reads); ``None`` while some are
        strings, which ``generate`` encodes with its ``tokenizer``."""
        from .samplers import dry_breaker_ids

        return dry_breaker_ids(self)

    def unsupported_settings(self) -> list[str]:
        """Fields set to values that ask for a feature ferrogen does not carry out.

        These fields round-trip through ``generation_config.json`` like any other, but
        :func:`ferrogen.generate` refuses to run with them rather than ignore them silently
        (``model.generate`` under :func:`ferrogen.enable` hands such calls to transformers).

        Example:
            >>> GenerationConfig(use_mtp=True).unsupported_settings()
            ['use_mtp']
            >>> GenerationConfig(use_mtp=False).unsupported_settings()
            []
        """
        return [name for name, asks in _NOT_CARRIED_OUT.items() if asks(getattr(self, name))]

    def generation_mode(self, assistant_model: Any = None) -> GenerationMode:
        """The decoding strategy these settings select, by transformers' rule.

        ``assistant_model``, ``prompt_lookup_num_tokens``, ``assistant_early_exit`` or ``use_mtp``
        turn greedy or sampling into :attr:`GenerationMode.ASSISTED`; with any other mode they
        raise ``ValueError`` naming the trigger. ``dola_layers`` turns greedy or sampling into
        :attr:`GenerationMode.DOLA` and is refused with any other mode (assisted included).

        Example:
            >>> GenerationConfig(penalty_alpha=0.6, top_k=4).generation_mode().value
            'contrastive_search'
            >>> GenerationConfig(prompt_lookup_num_tokens=3).generation_mode().value
            'assisted'
        """
        if self.constraints is not None or self.force_words_ids is not None or self.force_words is not None:
            mode = GenerationMode.CONSTRAINED_BEAM_SEARCH
        elif self.num_beams == 1:
            if self.do_sample:
                mode = GenerationMode.SAMPLE
            elif self.penalty_alpha is not None and self.penalty_alpha > 0 and self.top_k > 1:
                mode = GenerationMode.CONTRASTIVE_SEARCH
            else:
                mode = GenerationMode.GREEDY
        elif self.num_beam_groups > 1:
            mode = GenerationMode.GROUP_BEAM_SEARCH
        else:
            mode = GenerationMode.BEAM_SAMPLE if self.do_sample else GenerationMode.BEAM_SEARCH
        triggers = [("assistant_model", assistant_model is not None),
                    ("prompt_lookup_num_tokens", self.prompt_lookup_num_tokens is not None),
                    ("assistant_early_exit", self.assistant_early_exit is not None), ("use_mtp", self.use_mtp)]
        trigger = next((name for name, on in triggers if on), None)
        if trigger is None:
            return self._with_dola(mode)
        what = "assisted"
        if mode in (GenerationMode.GREEDY, GenerationMode.SAMPLE):
            mode = GenerationMode.ASSISTED
            if self.dola_layers is None:
                return mode
            trigger, what = "dola_layers", "DoLa"
        raise GenerationConfigError(trigger, f"{what} decoding works only with greedy search or sampling, "
                                    f"but these settings select {mode.value}")

    def _with_dola(self, mode: GenerationMode) -> GenerationMode:
        """``dola_layers`` turns greedy search or sampling into :attr:`GenerationMode.DOLA`; with
        another mode transformers 4.55 ignored it with a warning, ferrogen refuses it."""
        if self.dola_layers is None:
            return mode
        if mode in (GenerationMode.GREEDY, GenerationMode.SAMPLE):
            return GenerationMode.DOLA
        raise GenerationConfigError("dola_layers", "DoLa decoding works only with greedy search or sampling, "
                                    f"but these settings select {mode.value}")

    def to_dict(self) -> dict[str, Any]:
        """Every field, deep-copied, in declaration order."""
        return {name: copy.deepcopy(getattr(self, name)) for name in _DEFAULTS}

    def to_diff_dict(self) -> dict[str, Any]:
        """Only the fields that differ from their defaults.

        Example:
            >>> GenerationConfig(num_beams=2, top_k=50).to_diff_dict()
            {'num_beams': 2}
        """
        return {k: v for k, v in self.to_dict().items() if not _v.same_value(v, _DEFAULTS[k])}

    def to_json_string(self, use_diff: bool = True) -> str:
        """JSON text (sorted keys, 2-space indent) of :meth:`to_diff_dict` or :meth:`to_dict`.

        ``sequence_bias`` is written as ``[[ids, bias], ...]``, a form transformers reads too.
        ``constraints`` objects are left out with a warning (persist ``force_words_ids`` instead).

        Example:
            >>> print(GenerationConfig(max_new_tokens=3).to_json_string(), end="")
            {
              "max_new_tokens": 3
            }
        """
        data = self.to_diff_dict() if use_diff else self.to_dict()
        if data.get("constraints") is not None:
            warnings.warn("constraints: constraint objects are not JSON-serialisable and were left out",
                          UserWarning, stacklevel=2)
        data.pop("constraints", None)
        return json.dumps({k: _v.to_json_value(k, v) for k, v in data.items()}, indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike, config_file_name: str = CONFIG_NAME) -> Path:
        """Validate, then write the non-default fields to ``save_directory/config_file_name``.

        Creates the directory; returns the path written. The file holds only transformers field
        names plus ferrogen's extras, so ``transformers.GenerationConfig.from_pretrained`` reads it.

        Example:
            >>> import tempfile
            >>> d = tempfile.mkdtemp()
            >>> path = GenerationConfig(num_beams=3).save_pretrained(d, "beam.json")
            >>> GenerationConfig.from_pretrained(d, "beam.json").num_beams
            3
        """
        self.validate()
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / config_file_name
        path.write_text(self.to_json_string(use_diff=True), encoding="utf-8")
        return path

    @classmethod
    def from_pretrained(cls, path_or_model: Any, config_file_name: str = CONFIG_NAME) -> GenerationConfig:
        """Load from a local directory, a JSON file, a transformers model or a transformers config.

        A directory is read at ``path/config_file_name``, a file (or ``*.json`` path) as is; a
        missing file raises ``FileNotFoundError`` naming the path (Hub ids are not downloaded). A
        model gives its ``generation_config`` (else one derived from ``model.config``). Parsing
        follows :meth:`from_dict`.

        Example:
            >>> GenerationConfig.from_pretrained("/nonexistent")
            Traceback (most recent call last):
            ...
            FileNotFoundError: generation config not found: /nonexistent/generation_config.json
        """
        if isinstance(path_or_model, GenerationConfig):
            return path_or_model.copy()
        if isinstance(path_or_model, (str, os.PathLike)):
            path = Path(path_or_model)
            if not (path.is_file() or (path.suffix == ".json" and not path.is_dir())):
                path = path / config_file_name
            if not path.is_file():
                raise FileNotFoundError(f"generation config not found: {path}")
            return _naming_source(cls.from_dict, _v.read_json_object(path), str(path))
        if hasattr(path_or_model, "get_generation_mode"):  # a transformers GenerationConfig
            return cls.from_transformers(path_or_model)
        hf_config = getattr(path_or_model, "generation_config", None)
        if hf_config is None and hasattr(path_or_model, "config"):
            from transformers import GenerationConfig as HFGenerationConfig

            hf_config = HFGenerationConfig.from_model_config(path_or_model.config)
        if hf_config is None:
            raise TypeError(f"path_or_model: expected a path, a model or a GenerationConfig, got "
                            f"{type(path_or_model).__name__}")
        source = getattr(path_or_model, "name_or_path", None)
        where = f"the model's generation config ({Path(source) / config_file_name})" if source else \
            "the model's generation config"
        return _naming_source(cls.from_transformers, hf_config, where)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationConfig:
        """Build from a mapping such as a parsed ``generation_config.json``; lenient about keys.

        ``None`` means "default"; transformers' bookkeeping keys (``transformers_version``,
        ``_private`` keys) are dropped; other unknown keys are dropped with one ``UserWarning``
        naming them (Hub configs carry model-specific keys).

        Example:
            >>> GenerationConfig.from_dict({"top_k": None, "num_beams": 2, "transformers_version": "5.0"})
            GenerationConfig(num_beams=2)
        """
        known = {k: v for k, v in data.items() if k in _DEFAULTS}
        unknown = sorted(k for k in data if k not in _DEFAULTS and k not in _BOOKKEEPING_KEYS
                         and not str(k).startswith("_"))
        if unknown:
            warnings.warn(f"{', '.join(map(str, unknown))}: not generation config field(s); ignored",
                          UserWarning, stacklevel=2)
        return cls(**known)

    @classmethod
    def from_transformers(cls, hf_config: Any) -> GenerationConfig:
        """Convert a ``transformers.GenerationConfig`` (4.x or 5.x): unset (``None``) fields get defaults.

        Example:
            >>> import transformers
            >>> GenerationConfig.from_transformers(transformers.GenerationConfig(num_beams=2))
            GenerationConfig(num_beams=2)
        """
        data = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(vars(hf_config))
        return cls.from_dict(data)

    def to_transformers(self) -> Any:
        """A ``transformers.GenerationConfig`` holding this config's non-default values.

        ferrogen's extras become plain attributes (transformers keeps and saves them). Values
        transformers refuses raise its own error.

        Example:
            >>> GenerationConfig(num_beams=2).to_transformers().num_beams
            2
        """
        from transformers import GenerationConfig as HFGenerationConfig

        return HFGenerationConfig(**self.to_diff_dict())

    def update(self, **kwargs: Any) -> dict[str, Any]:
        """Set the known fields in place (all or none: the result is validated first); return the rest.

        Example:
            >>> cfg = GenerationConfig()
            >>> cfg.update(max_new_tokens=4, attention_mask=None)
            {'attention_mask': None}
            >>> cfg.max_new_tokens
            4
        """
        known = {k: v for k, v in kwargs.items() if k in _DEFAULTS}
        updated = self.merged(**known)
        for name in _DEFAULTS:
            setattr(self, name, getattr(updated, name))
        return {k: v for k, v in kwargs.items() if k not in known}

    def merged(self, **overrides: Any) -> GenerationConfig:
        """A new validated config with ``overrides`` applied; ``self`` is left unchanged.

        Unknown keys raise ``TypeError`` naming them. ``None`` resets a field to its default.

        Example:
            >>> base = GenerationConfig(max_new_tokens=8)
            >>> base.merged(num_beams=2)
            GenerationConfig(max_new_tokens=8, num_beams=2)
            >>> base
            GenerationConfig(max_new_tokens=8)
        """
        unknown = set(overrides) - _DEFAULTS.keys()
        if unknown:
            raise _v.unknown_fields_error(unknown, _DEFAULTS)
        return type(self)(**{**self.to_dict(), **overrides})

    def copy(self) -> GenerationConfig:
        """A deep copy."""
        return copy.deepcopy(self)

    @property
    def eos_token_ids(self) -> list[int]:
        """``eos_token_id`` as a list: ``[]`` when unset, ``[id]`` for one id.

        Example:
            >>> GenerationConfig(eos_token_id=2).eos_token_ids
            [2]
        """
        eos = self.eos_token_id
        return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)

    def resolved_max_length(self, input_len: int, max_position_embeddings: int | None = None) -> int:
        """Total length (prompt included) at which generation stops, by transformers' rule.

        ``max_new_tokens`` wins: ``input_len + max_new_tokens``. A ``max_length`` at its default
        (20) means 20 new tokens, capped at ``max_position_embeddings``; any other ``max_length``
        is used as given. A result not above ``input_len`` raises (as transformers does).

        Example:
            >>> GenerationConfig(max_new_tokens=5).resolved_max_length(7)
            12
            >>> GenerationConfig().resolved_max_length(7, max_position_embeddings=16)
            16
        """
        _v.int_field(0)("input_len", input_len)
        if self.max_new_tokens is not None:
            if input_len + self.max_new_tokens >= _v.LENGTH_LIMIT:
                raise GenerationConfigError("max_new_tokens", f"the input ({input_len} tokens) plus "
                                            f"{self.max_new_tokens} new tokens exceed 2**63 - 1 positions")
            return input_len + self.max_new_tokens
        total = self.max_length
        if total == _DEFAULTS["max_length"]:
            total += input_len
            if max_position_embeddings is not None:
                total = min(total, max_position_embeddings)
        if input_len >= total:
            raise GenerationConfigError("max_length", f"the input is {input_len} tokens long but max_length is "
                                        f"{total}; increase max_length or set max_new_tokens")
        return total

    def resolved_min_length(self, input_len: int) -> int:
        """Minimum total length: ``input_len + min_new_tokens`` if set, else ``min_length``.

        Example:
            >>> GenerationConfig(min_new_tokens=3).resolved_min_length(7)
            10
        """
        _v.int_field(0)("input_len", input_len)
        return self.min_length if self.min_new_tokens is None else input_len + self.min_new_tokens

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_diff_dict().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GenerationConfig):
            return NotImplemented
        return all(_v.same_value(getattr(self, n), getattr(other, n)) for n in _DEFAULTS)

    __hash__ = None  # type: ignore[assignment]  # mutable


# Fields ferrogen reads and writes but does not carry out; the predicate says when a value
# asks for the missing feature (cache_implementation="static" changes nothing). guidance_scale and the
# watermarks (green-list and SynthID) run natively in some modes only: generate.unsupported_settings adds
# them elsewhere.
_NOT_CARRIED_OUT: dict[str, Any] = {
    "output_attentions": bool,
    "output_hidden_states": bool,
    "forced_decoder_ids": lambda v: bool(v),
    "use_mtp": bool,
    "continuous_batching_config": lambda v: v is not None,
    "cache_implementation": lambda v: v == "paged",
}


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(GenerationConfig)}
_CHECKS: dict[str, _v.Checker] = {f.name: f.metadata["check"] for f in fields(GenerationConfig)}


def _naming_source(build: Callable[[Any], GenerationConfig], data: Any, source: str) -> GenerationConfig:
    """``build(data)``; a bad field's error (field name still first) also says which file held it."""
    try:
        return build(data)
    except GenerationConfigError as err:
        message = str(err)[len(err.field) + 2:]
        raise type(err)(err.field, f"{message} (in {source})") from None
