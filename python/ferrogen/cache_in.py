"""Continuing from a cache the caller gives (``past_key_values=`` / transformers 5.x's ``cache=``).

The "re-use a prompt cache" pattern of transformers' docs: run a prompt prefix once, keep its
``DynamicCache``, then ``generate(full_ids, past_key_values=copy.deepcopy(prefix_cache))`` where
``full_ids`` starts with the cached tokens. transformers 5.x (``GenerationMixin._prefill``) feeds
only the uncached tail (``input_ids[:, cache.get_seq_length():]``), with the position ids of the
whole sequence (from its attention mask) and the whole mask, and grows the given cache in place;
ferrogen's decoder-only adapter does the same (:func:`take_tail`), so the caller's cache is
mutated in place as transformers mutates it.

transformers does not expand the given cache for beams or ``num_return_sequences``: the cache
must already hold ``batch * max(num_beams, num_return_sequences)`` rows (a ``batch``-row cache
fails inside its forward pass). A cache as long as the ids or longer leaves transformers
nothing to feed (it then re-feeds a wrong slice); ferrogen refuses it.

Covered: greedy search, sampling and beam search of decoder-only transformers models with a
``DynamicCache``. Everything else is refused by :func:`cache_refusal` (``ferrogen.generate``
raises it as a ``ValueError``; ``ferrogen.enable`` runs transformers with it as the reason).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .config import GenerationConfig, GenerationMode

__all__ = ["CACHE_ARGUMENTS", "CACHE_MODES", "cache_refusal", "cached_length", "pop_given_cache", "take_tail"]

#: the names generate takes a cache under (4.x / 5.x)
CACHE_ARGUMENTS = ("past_key_values", "cache")
#: the strategies that run from a given cache
CACHE_MODES = frozenset({GenerationMode.GREEDY, GenerationMode.SAMPLE, GenerationMode.BEAM_SEARCH,
                         GenerationMode.BEAM_SAMPLE})


def pop_given_cache(arguments: dict[str, Any]) -> Optional[Any]:
    """Removes ``past_key_values`` / ``cache`` from ``arguments``; the given one (``None``: none).
    Both given is refused, as transformers' deprecation of the old name refuses it."""
    values = {name: arguments.pop(name) for name in CACHE_ARGUMENTS if arguments.get(name) is not None}
    if len(values) > 1:
        raise ValueError("past_key_values: give the cache once, as past_key_values= or cache= (got both)")
    return next(iter(values.values()), None)


def cached_length(cache: Any) -> int:
    """Positions already in the cache."""
    return int(cache.get_seq_length())


def _cache_rows(cache: Any) -> Optional[int]:
    """Rows of a filled dynamic cache (``None`` while it is empty)."""
    for layer in getattr(cache, "layers", ()):
        keys = getattr(layer, "keys", None)
        if isinstance(keys, torch.Tensor) and keys.dim() == 4 and keys.numel():
            return int(keys.shape[0])
    return None


def cache_refusal(
    model: Any, cache: Any, input_ids: Any, config: GenerationConfig, mode: GenerationMode, embeds: bool = False,
    attention_mask: Any = None,
) -> Optional[str]:
    """Why ferrogen cannot continue from ``cache`` for this call (``None``: it can)."""
    from transformers.cache_utils import Cache, DynamicCache

    from .models import is_encoder_decoder

    if is_encoder_decoder(model) or not hasattr(model, "get_output_embeddings"):
        return "ferrogen continues from a given cache with decoder-only transformers models only"
    if isinstance(cache, tuple):
        return "a tuple (legacy cache); transformers 5.x refuses it too: pass a Cache such as DynamicCache"
    if not isinstance(cache, Cache):
        return f"expected a transformers Cache, got {type(cache).__name__}"
    if not isinstance(cache, DynamicCache):
        return f"ferrogen continues from a DynamicCache only, got {type(cache).__name__}"
    if mode not in CACHE_MODES:
        return f"ferrogen continues from a given cache with greedy, sampling and beam search, not {mode.value}"
    if config.cache_implementation is not None:
        return "given together with cache_implementation (transformers refuses both)"
    if config.guidance_scale is not None and config.guidance_scale != 1:
        return "given with classifier-free guidance (not covered)"
    if config.token_healing or config.use_cache is False:
        return "given with token_healing or use_cache=False (not covered)"
    if embeds:
        return "given together with inputs_embeds (not covered)"
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        return "needs input_ids [batch, length] that start with the cached tokens"
    if isinstance(attention_mask, torch.Tensor) and attention_mask.shape[-1] != input_ids.shape[1]:
        # transformers also takes only the uncached ids with the whole mask; ferrogen wants the whole ids
        return (f"input_ids hold {int(input_ids.shape[1])} positions, attention_mask {int(attention_mask.shape[-1])}: "
                "pass the whole ids (the cached tokens, then the new ones) with their mask")
    past = cached_length(cache)
    if past >= int(input_ids.shape[1]):
        return (f"the cache holds {past} positions, input_ids only {int(input_ids.shape[1])}: "
                "input_ids must hold the cached tokens and at least one more")
    copies = max(config.num_beams or 1, config.num_return_sequences or 1)
    rows, want = _cache_rows(cache), int(input_ids.shape[0]) * copies
    if rows is not None and rows != want:
        return (f"the cache has {rows} rows; this call needs batch {int(input_ids.shape[0])} x {copies} "
                f"(num_beams / num_return_sequences) = {want}: transformers does not expand a given cache")
    return None


def take_tail(cache: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """The part of ``input_ids`` the cache does not hold yet (what transformers' prefill feeds)."""
    return input_ids[:, cached_length(cache):]
