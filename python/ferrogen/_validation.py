"""Checks behind :class:`ferrogen.GenerationConfig` (internal).

Every checker takes ``(name, value)`` and returns the value in canonical form (numpy ints become
``int``, ints in float fields ``float``, tuples of ids lists, ``sequence_bias`` a
``{tuple_of_ids: float}`` dict) or raises :class:`GenerationConfigError`, whose message starts
with the field name: ``float_field(0, 1, low_open=True)("top_p", 1.5)`` raises
``GenerationConfigError("top_p: must be in (0, 1], got 1.5")``. Each field of
``GenerationConfig`` names its checker next to its default.
"""

from __future__ import annotations

import ast
import json
import math
import numbers
import os
import sys
import warnings
from types import FrameType
from typing import Any, Callable, Iterable, Optional

from ._core import GenerationSettings, InvalidArgumentError

Checker = Callable[[str, Any], Any]

ASSISTANT_SCHEDULES = ("heuristic", "constant", "heuristic_transient")
SEED_LIMIT = 2**64
#: Every other int the core takes is below this (its int64 token ids, its sizes): a larger one is
#: refused here, with the field's message, before any model work (the core would also refuse it by
#: name, src/py/ints.rs, but only once a strategy builds its settings).
INT_LIMIT = 2**63
#: Lengths (``max_length``, ``max_new_tokens``, ``min_length``, ``min_new_tokens``) are below this:
#: torch sizes and positions are int64.
LENGTH_LIMIT = INT_LIMIT


class GenerationConfigError(InvalidArgumentError):
    """An invalid generation setting; ``field`` names the argument and the message starts with it.

    The one error family for settings: the Rust core raises this class too (its rules live in the
    core's ``validate``), and it is an :class:`ferrogen.InvalidArgumentError` and a ``ValueError``.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class GenerationConfigTypeError(GenerationConfigError, TypeError):
    """A generation setting of the wrong type; catchable as ``TypeError`` and as ``ValueError``."""


class UnknownFieldError(TypeError):
    """Keyword(s) that are not generation settings; ``fields`` lists them."""

    def __init__(self, fields: list[str], message: str) -> None:
        super().__init__(message)
        self.fields = fields


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the closest of ``known`` to ``name``, or ``""`` when none is close.

    The one suggestion rule for unknown names, in the Python API and on the command line.
    """
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_fields_error(unknown: Iterable[str], known: Iterable[str]) -> UnknownFieldError:
    """Build the ``TypeError`` raised for keyword(s) that name no field, with a suggestion."""
    names = sorted(unknown)
    known = list(known)
    parts = [f"{name!r}" + did_you_mean(name, known) for name in names]
    return UnknownFieldError(names, "unknown generation config field(s): " + ", ".join(parts))


def _show(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _type_error(name: str, expected: str, value: Any) -> GenerationConfigTypeError:
    return GenerationConfigTypeError(name, f"must be {expected}, got {_show(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _token_id(name: str, value: Any, what: str = "a token id") -> int:
    if not _is_int(value):
        raise _type_error(name, f"{what} (int >= 0)", value)
    if value < 0:
        raise GenerationConfigError(name, f"{what} must be >= 0, got {value}")
    if value >= INT_LIMIT:
        raise GenerationConfigError(name, f"{what} must be < 2**63 (an int64), got {value}")
    return int(value)


def _id_list(name: str, value: Any, *, allow_empty: bool = True, what: str = "a list of token ids") -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise _type_error(name, what, value)
    if not value and not allow_empty:
        raise GenerationConfigError(name, f"must be a non-empty list, got {value!r}")
    return [_token_id(name, item) for item in value]


def _nonempty_list(name: str, value: Any, expected: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise _type_error(name, expected, value)
    if not value:
        raise GenerationConfigError(name, f"must not be empty ({expected})")
    return list(value)


def int_field(minimum: int, maximum: int | None = None) -> Checker:
    """Checker for an int field (bools refused) with an inclusive lower bound, below ``maximum``
    (exclusive; without one, below :data:`INT_LIMIT`, what the core takes)."""

    def check(name: str, value: Any) -> int:
        if not _is_int(value):
            raise _type_error(name, "an int", value)
        if value < minimum or (maximum is not None and value >= maximum):
            bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum})"
            raise GenerationConfigError(name, f"must be {bound}, got {value}")
        if maximum is None and value >= INT_LIMIT:
            raise GenerationConfigError(name, f"must be >= {minimum} and < 2**63 (an int64), got {value}")
        return int(value)

    return check


def float_field(low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
                high_open: bool = False) -> Checker:
    """Checker for a real-number field (ints accepted, bools and NaN refused) within a range."""
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")

    def describe() -> str:
        if high == math.inf:
            return f"{'>' if low_open else '>='} {low:g}"
        return f"in {lo}{low:g}, {high:g}{hi}"

    def check(name: str, value: Any) -> float:
        if not _is_real(value):
            raise _type_error(name, "a number", value)
        value = float(value)
        if math.isnan(value):
            raise GenerationConfigError(name, "must not be NaN")
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        if below or above:
            raise GenerationConfigError(name, f"must be {describe()}, got {value:g}")
        return value

    return check


def number(name: str, value: Any) -> float:
    """A real number (ints accepted, bools and NaN refused) whose range the core checks."""
    return float_field()(name, value)


def integer(name: str, value: Any) -> int:
    """An int (bools refused) whose range the core checks."""
    if not _is_int(value):
        raise _type_error(name, "an int", value)
    return int(value)


def _typed(kind: type, expected: str) -> Checker:
    def check(name: str, value: Any) -> Any:
        if not isinstance(value, kind):
            raise _type_error(name, expected, value)
        return value

    return check


bool_field, str_field, dict_field = _typed(bool, "a bool"), _typed(str, "a str"), _typed(dict, "a dict")


def any_field(name: str, value: Any) -> Any:
    return value


def one_or_more_ids(name: str, value: Any) -> int | list[int]:
    """An int token id or a non-empty list of them (eos_token_id, forced_eos_token_id, ...)."""
    if isinstance(value, (list, tuple)):
        return _id_list(name, value, allow_empty=False, what="an int or a list of ints")
    if not _is_int(value):
        raise _type_error(name, "an int or a list of ints", value)
    return _token_id(name, value)


def early_stopping(name: str, value: Any) -> bool | str:
    if isinstance(value, bool) or (isinstance(value, str) and value == "never"):
        return value
    raise GenerationConfigError(name, f"must be True, False or 'never', got {_show(value)}")


def choice(options: tuple[str, ...]) -> Checker:
    def check(name: str, value: Any) -> str:
        if value not in options or not isinstance(value, str):
            raise GenerationConfigError(name, f"must be one of {list(options)}, got {_show(value)}")
        return value

    return check


def stop_strings(name: str, value: Any) -> str | list[str]:
    items = [value] if isinstance(value, str) else value
    items = _nonempty_list(name, items, "a str or a list of str")
    for item in items:
        if not isinstance(item, str) or not item:
            raise GenerationConfigError(name, f"every stop string must be a non-empty str, got {_show(item)}")
    return value if isinstance(value, str) else list(items)


def bad_words_ids(name: str, value: Any) -> list[list[int]]:
    value = _nonempty_list(name, value, "a list of lists of token ids")
    return [_id_list(name, word, allow_empty=False, what="a list of token ids") for word in value]


def force_words_ids(name: str, value: Any) -> list:
    """A list whose items are phrases (list of ids) or disjunctions (list of phrases)."""
    value = _nonempty_list(name, value, "a list of phrases (lists of token ids)")
    out: list = []
    for word in value:
        if not isinstance(word, (list, tuple)) or not word:
            raise GenerationConfigError(name, f"every entry must be a non-empty list, got {_show(word)}")
        if all(isinstance(part, (list, tuple)) for part in word):
            out.append([_id_list(name, part, allow_empty=False) for part in word])
        elif any(isinstance(part, (list, tuple)) for part in word):
            raise GenerationConfigError(name, f"an entry mixes token ids and lists: {word!r}")
        else:
            out.append(_id_list(name, word, allow_empty=False))
    return out


def force_words(name: str, value: Any) -> list:
    """Strings to force (resolved with a tokenizer); a list item that is a list is a disjunction."""
    value = _nonempty_list(name, value, "a list of str (or lists of str)")
    out: list = []
    for word in value:
        options = word if isinstance(word, (list, tuple)) else [word]
        if not options or not all(isinstance(o, str) and o for o in options):
            raise GenerationConfigError(name, f"every entry must be a non-empty str or list of them, got {word!r}")
        out.append(list(word) if isinstance(word, (list, tuple)) else word)
    return out


def _per_prompt(name: str, value: Any, one: Checker, expected: str) -> Any:
    """One value, or a list of them with one per prompt (a different constraint per row)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise GenerationConfigError(name, f"must not be empty ({expected}, or a list of them, one per prompt)")
        return [one(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return one(name, value)


def _schema(name: str, value: Any) -> Any:
    if isinstance(value, bool) or (isinstance(value, str) and value.strip()):
        return value
    if isinstance(value, dict):
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise GenerationConfigError(name, f"a JSON Schema must be JSON-serialisable: {err}") from None
        return value
    raise _type_error(name, "a JSON Schema (dict, or its JSON text)", value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _type_error(name, "a non-empty str", value)
    return value


def _choice_list(name: str, value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise _type_error(name, "a non-empty list of str", value)
    return list(value)


def json_schema(name: str, value: Any) -> Any:
    """A JSON Schema (dict or JSON text), or a list with one per prompt."""
    return _per_prompt(name, value, _schema, "a JSON Schema")


def regex(name: str, value: Any) -> Any:
    """A regular expression the whole output must match, or a list with one per prompt."""
    return _per_prompt(name, value, _text, "a regex str")


def grammar(name: str, value: Any) -> Any:
    """A grammar in llguidance's Lark syntax, or a list with one per prompt."""
    return _per_prompt(name, value, _text, "a Lark grammar str")


def choices(name: str, value: Any) -> list[Any]:
    """The output is one of these strings; a list of lists gives one list per prompt."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
        return [_choice_list(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return _choice_list(name, value)


GRAMMAR_FIELDS = ("json_schema", "regex", "grammar", "choices")


def _check_grammar(c: Any) -> None:
    given = [n for n in GRAMMAR_FIELDS if getattr(c, n) is not None]
    if len(given) > 1:
        raise GenerationConfigError(given[1], f"give one output constraint; {given[0]} is set already")


def constraints(name: str, value: Any) -> list:
    value = _nonempty_list(name, value, "a list of constraint objects")
    if any(item is None for item in value):
        raise GenerationConfigError(name, "must not contain None")
    return list(value)


def exponential_decay(name: str, value: Any) -> tuple[int, float]:
    """``(start_index, decay_factor)``: start >= 0 generated tokens, factor >= 1 (1 leaves EOS unchanged)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _type_error(name, "a (start_index, decay_factor) pair", value)
    return (int_field(0)(name, value[0]), number(name, value[1]))  # the core checks the factor


def _bias_key(name: str, key: Any) -> tuple[int, ...]:
    if isinstance(key, str):  # transformers 5.x writes tuple keys as "(1, 2)"
        try:
            key = ast.literal_eval(key)
        except (ValueError, SyntaxError):
            raise GenerationConfigError(name, f"cannot read a token sequence from key {key!r}") from None
        key = (key,) if _is_int(key) else key
    return tuple(_id_list(name, key, allow_empty=False, what="a tuple of token ids"))


def logit_bias(name: str, value: Any) -> dict[int, float]:
    """``{token id: bias}``; JSON's string keys (``{"42": -1.5}``) read back as ints."""
    if not isinstance(value, dict):
        raise _type_error(name, "a dict {token id: float}", value)
    out: dict[int, float] = {}
    for key, bias in value.items():
        if isinstance(key, str):
            try:
                key = int(key)
            except ValueError:
                raise GenerationConfigError(name, f"cannot read a token id from key {key!r}") from None
        out[_token_id(name, key)] = float_field()(name, bias)
    return out


def allowed_token_ids(name: str, value: Any) -> list[int]:
    return _id_list(name, value, allow_empty=False)


def dry_sequence_breakers(name: str, value: Any) -> list[str | list[int]]:
    """Strings (turned into token ids with the call's tokenizer) or token-id sequences."""
    if not isinstance(value, (list, tuple)):
        raise _type_error(name, "a list of strings or of token-id lists", value)
    out: list[str | list[int]] = []
    for item in value:
        if isinstance(item, str):
            if not item:
                raise GenerationConfigError(name, "a breaker must not be the empty string")
            out.append(item)
        else:
            out.append(_id_list(name, item, allow_empty=False, what="a string or a list of token ids"))
    return out


def sampler_order(name: str, value: Any) -> str:
    """``"transformers"``, ``"llama.cpp"``, or stage names (a list, or one comma-separated string);
    stored as the string the core reads, which checks the names."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return ",".join(value)
    raise _type_error(name, "'transformers', 'llama.cpp' or a list of stage names", value)


def sequence_bias(name: str, value: Any) -> dict[tuple[int, ...], float]:
    """``{(ids...): bias}``; also reads the JSON form ``[[ids, bias], ...]``."""
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        pairs = list(value)
    else:
        raise _type_error(name, "a dict {tuple of ids: float} or a list of [ids, float] pairs", value)
    if not pairs:
        raise GenerationConfigError(name, "must not be empty")
    return {_bias_key(name, key): float_field()(name, bias) for key, bias in pairs}


def forced_decoder_ids(name: str, value: Any) -> list[list[int | None]]:
    """``[[index, token_id], ...]``; a ``None`` token (Whisper's configs) leaves that position free."""
    if not isinstance(value, (list, tuple)):
        raise _type_error(name, "a list of [index, token_id] pairs", value)
    for pair in value:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise GenerationConfigError(name, f"every entry must be an [index, token_id] pair, got {pair!r}")
    return [[_token_id(name, i, "an index"), None if t is None else _token_id(name, t)] for i, t in value]


def dola_layers(name: str, value: Any) -> str | list[int]:
    if value in ("low", "high") and isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value:
        return [int_field(0)(name, layer) for layer in value]
    raise GenerationConfigError(name, f"must be 'low', 'high' or a non-empty list of layer indices, got {value!r}")


def check_field(check: Checker, name: str, value: Any, default: Any) -> Any:
    """Canonical form of ``value`` for field ``name``; ``None`` is valid only where the default is ``None``."""
    if value is None:
        if default is None:
            return None
        raise GenerationConfigTypeError(name, f"must not be None (its default is {default!r})")
    return check(name, value)


# --------------------------------------------------------------------------- cross-field rules


def _warn(message: str) -> None:
    """Warn once per call site outside ferrogen's config modules (Python's default filter dedups)."""
    here = {os.path.dirname(os.path.abspath(__file__))}
    level = 2  # stacklevel 2 is _warn's caller
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) in here:
        level, frame = level + 1, frame.f_back
    warnings.warn(message, UserWarning, stacklevel=level)


def _ignored_knobs(c: Any) -> list[tuple[str, str]]:
    """``(field, reason)`` for knobs set to a non-default value that the selected mode never reads."""
    contrastive = c.penalty_alpha is not None and c.penalty_alpha > 0  # contrastive search reads top_k
    sampling = [("temperature", c.temperature != 1.0), ("top_p", c.top_p != 1.0), ("min_p", c.min_p is not None),
                ("top_h", c.top_h is not None), ("typical_p", c.typical_p != 1.0),
                ("top_k", c.top_k != 50 and not contrastive), ("epsilon_cutoff", c.epsilon_cutoff != 0.0),
                ("eta_cutoff", c.eta_cutoff != 0.0)]
    beam = [("early_stopping", c.early_stopping is not False), ("length_penalty", c.length_penalty != 1.0)]
    ignored = [] if c.do_sample else [(name, "do_sample=False") for name, on in sampling if on]
    return ignored + ([] if c.num_beams > 1 else [(name, "num_beams=1") for name, on in beam if on])


def check_combinations(c: Any) -> None:
    """Rules that involve several fields of config ``c`` (values already in canonical form).

    The ranges of the settings the core reads and how beams, groups and sampling combine are
    the core's rules: reading ``c`` into its settings checks them (``GenerationSettings``).
    """
    GenerationSettings(c)
    if c.num_beam_groups > 1 and c.diversity_penalty == 0.0:
        _warn("diversity_penalty: is 0.0, so group beam search behaves like plain beam search")
    _check_constrained(c)
    _check_grammar(c)
    _check_contrastive(c)
    _check_forced_vs_suppressed(c)
    for knob, reason in _ignored_knobs(c):
        _warn(f"{knob}: is set to {getattr(c, knob)!r} but {reason}, so it has no effect")
    if c.max_new_tokens is not None and c.min_new_tokens is not None and c.min_new_tokens > c.max_new_tokens:
        _warn(f"min_new_tokens: {c.min_new_tokens} exceeds max_new_tokens ({c.max_new_tokens}); "
              "generation stops at max_new_tokens")


def _check_constrained(c: Any) -> None:
    given = [n for n in ("constraints", "force_words_ids", "force_words") if getattr(c, n) is not None]
    if not given:
        return
    field = given[0]
    if c.do_sample:
        raise GenerationConfigError(field, "constrained beam search does not support do_sample=True")
    if c.num_beams == 1:
        raise GenerationConfigError(field, "constrained beam search needs num_beams > 1, got num_beams=1")
    if c.num_beam_groups > 1:
        raise GenerationConfigError(field, "constrained beam search does not support num_beam_groups > 1")


def _check_contrastive(c: Any) -> None:
    if c.penalty_alpha is None or c.penalty_alpha == 0.0:
        return
    if c.do_sample:
        raise GenerationConfigError("penalty_alpha", "contrastive search does not support do_sample=True")
    if c.num_beams > 1:
        raise GenerationConfigError("penalty_alpha", f"contrastive search needs num_beams=1, got {c.num_beams}")
    if c.top_k <= 1:
        raise GenerationConfigError("top_k", f"must be > 1 for contrastive search (penalty_alpha="
                                    f"{c.penalty_alpha:g}), got {c.top_k}")


def _check_forced_vs_suppressed(c: Any) -> None:
    if not c.suppress_tokens:
        return
    suppressed = set(c.suppress_tokens)
    for name in ("forced_bos_token_id", "forced_eos_token_id"):
        forced = getattr(c, name)
        forced = set() if forced is None else {forced} if isinstance(forced, int) else set(forced)
        if forced and forced <= suppressed:
            raise GenerationConfigError(name, f"every forced token {sorted(forced)} is also in suppress_tokens")


# --------------------------------------------------------------------------- JSON forms


def read_json_object(path: Any) -> dict:
    """The JSON object stored at ``path``; ``ValueError`` naming the path if it is not one."""
    import json

    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps ``True``/``1`` and ``False``/``0`` apart (``early_stopping`` is bool or str)."""
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def to_json_value(name: str, value: Any) -> Any:
    if name == "sequence_bias" and isinstance(value, dict):
        return [[list(ids), bias] for ids, bias in value.items()]
    if isinstance(value, (list, tuple)):
        return [to_json_value("", item) for item in value]
    if isinstance(value, dict):
        return {str(k): to_json_value("", v) for k, v in value.items()}
    if hasattr(value, "to_dict"):  # watermarking / compile / cache config objects
        return to_json_value("", value.to_dict())
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return to_json_value("", asdict(value))
    return value
