"""Classifier-free guidance (``guidance_scale``): the unconditional branch.

transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor`` runs a second forward pass
per step over the negative prompt (or, without one, the last prompt token), with its own
cache that advances by the token each row just took; the conditional scores become
``scale * (log_softmax(cond) - log_softmax(uncond)) + log_softmax(uncond)``. The forward
pass is here (it is the model's); the arithmetic is the core's (``_core.apply_guidance``).
It runs first, before every other processor, as transformers' processor is the first of
its list: on the raw logits for greedy, sampling, contrastive search and DoLa, between the
log-softmax and the other processors for the beam family. Like transformers', the branch
follows row indices, not beam ancestry: its cache is never reordered when beams are, and
group beam search calls it once per group and step, on that group's rows
(docs/transformers-differences.md, "Classifier-free guidance with beams").
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import torch

from .. import _core

__all__ = ["UnconditionalBranch", "guidance_of"]


class UnconditionalBranch:
    """The negative prompt's own forward passes, one per step, as transformers runs them."""

    def __init__(self, model: Any, scale: float, ids: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                 use_cache: bool) -> None:
        self.model, self.scale = model, float(scale)
        self.ids, self.mask, self.use_cache = ids, mask, bool(use_cache)
        self.cache: Any = None
        self.first = True
        forward = getattr(model, "forward", model)
        try:
            takes_cache = "cache" in inspect.signature(forward).parameters
        except (TypeError, ValueError):
            takes_cache = False
        # the keyword transformers' processor passes: ``cache`` in 5.x, ``past_key_values`` before
        self.cache_key = "cache" if takes_cache else "past_key_values"

    def check_rows(self, rows: int) -> None:
        """The negative prompt needs one row per generated row (transformers fails at the
        second step otherwise); checked before any model work."""
        if self.ids is not None and int(self.ids.shape[0]) != rows:
            raise ValueError(f"negative_prompt_ids: has {int(self.ids.shape[0])} rows; it needs one per generated "
                             f"row ({rows}: batch size x num_return_sequences, or x num_beams for beam search)")

    def _inputs(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """transformers' ``get_unconditional_logits``: the first call takes the negative prompt
        (default: each row's last token), later ones the token each row took last."""
        if self.first:
            self.first = False
            if self.ids is None:
                self.ids = input_ids[:, -1:]
            if self.mask is None:
                self.mask = torch.ones_like(self.ids, dtype=torch.long)
            return self.ids, self.mask
        assert self.mask is not None and self.ids is not None
        self.mask = torch.cat([self.mask, torch.ones_like(input_ids[:, -1:], dtype=torch.long)], dim=1)
        self.ids = input_ids[:, -1:] if self.use_cache else torch.cat([self.ids, input_ids[:, -1:]], dim=1)
        return self.ids, self.mask

    def apply(self, input_ids: torch.Tensor, logits: torch.Tensor) -> None:
        """Guides ``logits`` (float32 ``[rows, vocab]`` on the host, written in place) given the
        rows' tokens so far."""
        ids, mask = self._inputs(input_ids)
        device = getattr(self.model, "device", ids.device)
        with torch.no_grad():
            out = self.model(ids.to(device), attention_mask=mask.to(device), use_cache=self.use_cache,
                             **{self.cache_key: self.cache})
        cache = getattr(out, self.cache_key, None)
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        self.cache = cache
        uncond = out.logits[:, -1].detach().to("cpu", torch.float32).contiguous()
        _core.apply_guidance(logits.numpy(), uncond.numpy(), self.scale)


def guidance_of(model: Any, config: Any, negative_prompt_ids: Optional[torch.Tensor],
                negative_prompt_attention_mask: Optional[torch.Tensor]) -> Optional[UnconditionalBranch]:
    """The branch of this call (``None`` unless ``guidance_scale`` is set and not 1)."""
    scale = config.guidance_scale
    if scale is None or scale == 1:
        return None
    if bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False)):
        # transformers' processor calls the model on the negative prompt's ids alone, which an
        # encoder-decoder model cannot run ("You must specify exactly one of input_ids or inputs_embeds")
        raise ValueError("guidance_scale: classifier-free guidance needs a decoder-only model (its unconditional "
                         f"pass runs the model on the negative prompt alone); {type(model).__name__} is an "
                         "encoder-decoder model. Leave guidance_scale unset (or 1)")
    ids = _ids("negative_prompt_ids", negative_prompt_ids)
    mask = _ids("negative_prompt_attention_mask", negative_prompt_attention_mask)
    if mask is not None and (ids is None or mask.shape != ids.shape):
        raise ValueError(f"negative_prompt_attention_mask: must have the shape of negative_prompt_ids "
                         f"{None if ids is None else list(ids.shape)}, got {list(mask.shape)}")
    return UnconditionalBranch(model, scale, ids, mask, config.use_cache is not False)


def _ids(name: str, value: Any) -> Optional[torch.Tensor]:
    if value is None:
        return None
    if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.dtype.is_floating_point or value.shape[1] == 0:
        raise ValueError(f"{name}: expected an integer tensor [batch, length] with length >= 1, got "
                         f"{type(value).__name__}{'' if not isinstance(value, torch.Tensor) else list(value.shape)}")
    return value.to(torch.long)
