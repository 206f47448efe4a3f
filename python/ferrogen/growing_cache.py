"""KV cache layers that grow into spare room instead of copying themselves at every step.

transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``: every
step copies the whole cache of every layer, a cost that grows with the batch and the length
(18% of a batch-64 step of the embedded model, more than the attention itself). Here the
layer's keys and values are views ``[:, :, :length]`` of buffers with room for more positions;
an append writes the new positions into the room, and only a full buffer is copied into a
larger one (a quarter larger, at least 64 positions: amortised, a copy every few dozen steps).

The values the attention reads are the same ones in the same layout (each row's positions are
contiguous; only the stride between rows and heads differs), so the logits are bit-identical
(``tests/test_growing_cache.py``).

The growth applies only while the model runs (:func:`growing`): outside a forward call the
layers are transformers' own ``DynamicLayer`` (whatever reorders, merges or trims the cache sees
its usual type) and keep a reference to their buffers, so the next step finds its room again
when nothing replaced the tensors. Whatever replaced them (a reorder, a merge) is copied into a
new buffer at the next append. :func:`release` hands a cache back to its caller compact.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from transformers.cache_utils import DynamicLayer

from .layer_class import retype

__all__ = ["GrowingLayer", "growing", "release", "select_rows"]

#: Spare positions a new buffer gets: a quarter of what it holds, at least this many.
MIN_ROOM = 64


def _room(length: int) -> int:
    return max(MIN_ROOM, length // 4)


def _start_in(past: torch.Tensor, buffer: Optional[torch.Tensor]) -> Optional[int]:
    """The position of ``buffer`` where ``past`` starts when ``past`` is the view
    ``buffer[..., start:start + n, :]`` (nothing replaced it since the last append; a crop or a
    trim of leading positions only narrowed it); None otherwise."""
    if (
        buffer is None
        or past.dim() != buffer.dim()
        or past.dtype != buffer.dtype
        or past.device != buffer.device
        or past.stride() != buffer.stride()
        or past.shape[:-2] != buffer.shape[:-2]
        or past.shape[-1] != buffer.shape[-1]
    ):
        return None
    offset, step = past.data_ptr() - buffer.data_ptr(), buffer.stride(-2) * buffer.element_size()
    if offset < 0 or offset % step:
        return None
    start = offset // step
    return start if start + past.shape[-2] <= buffer.shape[-2] else None


def _append(past: Optional[torch.Tensor], buffer: Optional[torch.Tensor], new: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(torch.cat([past, new], dim=-2), the buffer behind it)``, written into ``buffer``'s room
    when ``past`` is a view of it with room enough after it."""
    length = 0 if past is None or past.numel() == 0 else int(past.shape[-2])
    start = None if past is None or length == 0 else _start_in(past, buffer)
    end = length + int(new.shape[-2])
    if start is None or buffer is None or start + end > buffer.shape[-2]:
        buffer = new.new_empty((*new.shape[:-2], end + _room(end), new.shape[-1]))
        if past is not None and length:
            buffer[..., :length, :] = past
        start = 0
    buffer[..., start + length:start + end, :] = new
    return buffer[..., start:start + end, :], buffer


def _select(past: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(past.index_select(0, rows), the buffer behind it)``: the rows gathered into a buffer
    with room after them."""
    length = int(past.shape[-2])
    buffer = past.new_empty((rows.numel(), *past.shape[1:-2], length + _room(length), past.shape[-1]))
    view = buffer[..., :length, :]
    torch.index_select(past, 0, rows, out=view)
    return view, buffer


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose appends write into spare room (see the module)."""

    room_keys: Optional[torch.Tensor] = None
    room_values: Optional[torch.Tensor] = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self.room_keys = _append(self.keys, self.room_keys, key_states)
        self.values, self.room_values = _append(self.values, self.room_values, value_states)
        return self.keys, self.values


def _self_attention_layers(cache: Any) -> list[Any]:
    cache = getattr(cache, "self_attention_cache", cache)
    return list(getattr(cache, "layers", None) or ())


@contextmanager
def growing(cache: Any) -> Iterator[None]:
    """Lets the plain ``DynamicLayer`` layers of ``cache`` (the self-attention half of an
    encoder-decoder cache) grow into their room while the block runs; any other layer or cache
    is left as it is."""
    layers: list[Any] = [layer for layer in _self_attention_layers(cache) if type(layer) is DynamicLayer]
    for layer in layers:
        retype(layer, GrowingLayer)
    try:
        yield
    finally:
        for layer in layers:
            if type(layer) is GrowingLayer:  # (a model may have swapped it meanwhile)
                retype(layer, DynamicLayer)


def select_rows(cache: Any, rows: torch.Tensor) -> bool:
    """Keeps rows ``rows`` of every layer of a plain ``DynamicCache`` (as ``reorder_cache``
    would), each gathered into a buffer with room, so the next append copies nothing; False
    (nothing done) for any other cache."""
    from transformers.cache_utils import DynamicCache

    if type(cache) is not DynamicCache or not all(type(layer) is DynamicLayer for layer in cache.layers):
        return False
    layers: list[Any] = list(cache.layers)  # DynamicLayer each (checked above)
    for layer in layers:
        if layer.is_initialized and layer.get_seq_length() > 0:
            index = rows.to(layer.keys.device)
            layer.keys, layer.room_keys = _select(layer.keys, index)
            layer.values, layer.room_values = _select(layer.values, index)
    return True


def release(cache: Any) -> None:
    """Gives ``cache``'s layers tensors of their own size (a copy where they are views of a
    buffer with room) and drops the buffers: the cache as transformers would hand it back."""
    for layer in _self_attention_layers(cache):
        buffers = [layer.__dict__.pop(name, None) for name in ("room_keys", "room_values")]
        if all(buffer is None for buffer in buffers):
            continue
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor) and any(_start_in(tensor, b) is not None for b in buffers):
                setattr(layer, name, tensor.clone(memory_format=torch.contiguous_format))
