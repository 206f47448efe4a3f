"""What the transformers adapters (:mod:`.decoder_adapter`, :mod:`.seq2seq_adapter`) share:
handing logits out of a forward call, making and reading the cache, moving cached positions,
and the adapters' options and last hidden states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from .families import accepts
from .folded_reorder import settle
from .growing_cache import release


def logits_to_host(logits: torch.Tensor) -> torch.Tensor:
    """Last-position logits as a fresh contiguous float32 CPU tensor (one copy, any dtype/device)."""
    return logits.to(device="cpu", dtype=torch.float32, copy=True).contiguous()


def owns_storage(logits: torch.Tensor) -> bool:
    """Whether ``logits`` is a contiguous float32 CPU tensor that spans its whole storage:
    the fresh output of a language-model head (``logits_to_keep=1``), nothing else in it."""
    return bool(  # torch types the size checks as SymBool (symbolic shapes); here they are plain
        logits.device.type == "cpu"
        and logits.dtype == torch.float32
        and logits.is_contiguous()
        and logits.storage_offset() == 0
        and logits.untyped_storage().nbytes() == logits.numel() * 4
    )


def logits_out(logits: torch.Tensor, on_device: bool, borrow: bool = False) -> torch.Tensor:
    """``logits_to_host``, or (``on_device``) a fresh float32 copy where the model left them,
    as transformers' beam search takes them. With ``borrow`` (a transformers model, whose head
    allocates its output each call), CPU float32 logits that own their storage are taken
    without a copy, as an ordinary tensor over the same memory (not an inference tensor, so
    callers may still update it in place)."""
    if on_device:
        return logits.to(dtype=torch.float32, copy=True).contiguous()
    if borrow and owns_storage(logits):
        return torch.from_numpy(logits.detach().numpy())
    return logits_to_host(logits)



def new_cache(model: Any, encoder_decoder: bool) -> tuple[str, Any]:
    """The cache object and the forward keyword it goes under (``cache`` in 5.x); no object
    (the model makes its own on the first call) for the models transformers gives none."""
    from transformers import DynamicCache

    key = "cache" if accepts(model.forward, "cache") else "past_key_values"
    supports_default = getattr(model, "_supports_default_dynamic_cache", None)
    if callable(supports_default) and not supports_default():
        return key, None
    config = model.config.get_text_config(decoder=True)
    try:
        self_cache = DynamicCache(config=config)
    except TypeError:  # transformers < 4.56
        self_cache = DynamicCache()
    if not encoder_decoder:
        return key, self_cache
    from transformers import EncoderDecoderCache

    try:
        cross = DynamicCache(config=config)
    except TypeError:
        cross = DynamicCache()
    return key, EncoderDecoderCache(self_cache, cross)


def cache_from(outputs: Any, key: str, previous: Any) -> Any:
    """The cache a forward call returned; ``previous`` when it returns none (RecurrentGemma
    updates the cache object it was given and returns no cache field, as transformers keeps it)."""
    cache = getattr(outputs, key, None)
    if cache is None and key == "cache":
        cache = getattr(outputs, "past_key_values", None)
    return previous if cache is None else cache


def realign(drop: torch.Tensor, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows of ``length`` positions losing their last ``drop[r]``: the source position of
    every new position (``[rows, new_length]``, right-aligned) and whether it is real."""
    keep = length - drop.to(device=device, dtype=torch.long)
    width = int(keep.max())
    offset = (width - keep)[:, None]
    columns = torch.arange(width, device=device)[None, :]
    return (columns - offset).clamp(min=0), columns >= offset


def folds(model: Any) -> bool:
    """Whether beam reorders may wait for the next append (:mod:`.folded_reorder`): the model
    leaves reordering to the cache (no ``_reorder_cache`` of its own)."""
    return not callable(getattr(model, "_reorder_cache", None))


def splits_cross_attention(model: Any, cache: Any) -> bool:
    """Whether the cache is transformers' ``EncoderDecoderCache`` and the model leaves its
    reordering to it (no ``_reorder_cache`` of its own), so its halves can move separately."""
    from transformers.cache_utils import EncoderDecoderCache

    return type(cache) is EncoderDecoderCache and not callable(getattr(model, "_reorder_cache", None))


def plain_layers(cache: Any) -> bool:
    """Whether every layer of a dynamic cache keeps all positions (no sliding window, no
    recurrent state), so that positions can be dropped row by row. True before prefill."""
    from transformers.cache_utils import DynamicLayer

    return cache is None or all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


def gather_positions(cache: Any, index: torch.Tensor) -> None:
    """Takes positions ``index`` ([rows, new_length]) of every layer of a dynamic cache."""
    from transformers.cache_utils import DynamicLayer

    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise NotImplementedError(
                f"cache: {type(layer).__name__} layers cannot drop positions row by row; "
                "assisted decoding of a batch needs a dynamic (full attention) cache"
            )
        if layer.keys is None or layer.values is None or layer.keys.numel() == 0:
            continue
        rows, heads, _, dim = layer.keys.shape
        idx = index.to(layer.keys.device)[:, None, :, None].expand(rows, heads, index.shape[1], dim)
        layer.keys = layer.keys.gather(2, idx)
        layer.values = layer.values.gather(2, idx.expand(rows, heads, index.shape[1], layer.values.shape[-1]))


@dataclass
class AdapterOptions:
    output_hidden_states: bool = False
    #: The caller will crop cached positions (assisted decoding): sliding-window layers must then
    #: keep what they would drop until the next crop, as transformers' assisted decoding has them.
    rollback: bool = False
    #: keep each forward call's per-layer attentions / hidden states (output_attentions /
    #: output_hidden_states of generate), as ``step_outputs``
    collect_attentions: bool = False
    collect_hidden_states: bool = False


class HiddenStates:
    """The decoder's last-layer hidden states of the latest forward call (contrastive search
    asks the adapter for them with ``output_hidden_states=True``)."""

    _hidden: Optional[torch.Tensor] = None

    _cache: Any = None

    @property
    def cache(self) -> Any:
        """The model's cache (transformers' ``Cache``) after the latest forward call: every
        position but the last generated token, as ``generate`` returns it."""
        settle(self._cache)
        release(self._cache)
        return self._cache

    def last_hidden_state(self) -> Optional[torch.Tensor]:
        return None if self._hidden is None else self._hidden[:, -1]

    def hidden_states(self) -> Optional[torch.Tensor]:
        return self._hidden

