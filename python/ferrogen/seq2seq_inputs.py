"""Encoder-decoder model inputs beyond ``input_ids`` / ``attention_mask``, fed as transformers'
``generate`` feeds them: ``inputs_embeds`` (the encoder runs on them instead of on token ids),
``decoder_input_ids`` (the decoder's prompt, the start token put in front when no row begins
with it, ``_prepare_decoder_input_ids_for_generation``) and ``decoder_attention_mask`` (the
decoder prompt's mask, one more 1 per generated token).

``check_seq2seq_inputs`` validates them before any model work; :class:`Seq2SeqInputsAdapter`
is the encoder-decoder adapter that runs them (chosen only when one was given, so plain calls
take the adapter they always took).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch

from .models import EncoderDecoderAdapter

__all__ = ["SEQ2SEQ_INPUTS", "Seq2SeqInputsAdapter", "check_seq2seq_inputs"]

#: the decoder's own inputs an encoder-decoder model's generate takes (inputs_embeds is checked with input_ids)
SEQ2SEQ_INPUTS = ("decoder_input_ids", "decoder_attention_mask")


def check_seq2seq_inputs(batch: int, given: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``decoder_input_ids`` ``[batch, length >= 1]`` integer ids and ``decoder_attention_mask`` 0/1
    of the decoder prompt's shape (``[batch, 1]`` without ``decoder_input_ids``: the start token)."""
    checked: dict[str, torch.Tensor] = {}
    ids = given.get("decoder_input_ids")
    if ids is not None:
        ids = torch.as_tensor(ids)
        if ids.dim() != 2 or ids.shape[0] != batch or ids.shape[1] == 0 or ids.dtype.is_floating_point \
                or ids.dtype == torch.bool:
            raise ValueError(f"decoder_input_ids: expected an integer tensor [batch {batch}, length >= 1], got "
                             f"{ids.dtype} {list(ids.shape)}")
        checked["decoder_input_ids"] = ids.long()
    mask = given.get("decoder_attention_mask")
    if mask is not None:
        mask = torch.as_tensor(mask)
        shape = [batch, int(ids.shape[1]) if ids is not None else 1]
        if list(mask.shape) != shape or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"decoder_attention_mask: expected 0/1 values of shape {shape} (that of "
                             f"decoder_input_ids, else the start token's), got {mask.dtype} {list(mask.shape)}")
        checked["decoder_attention_mask"] = mask.long()
    return checked


class Seq2SeqInputsAdapter(EncoderDecoderAdapter):
    """:class:`~ferrogen.models.EncoderDecoderAdapter` with the caller's ``inputs_embeds`` for the
    encoder and ``decoder_input_ids`` / ``decoder_attention_mask`` for the decoder's prompt."""

    def __init__(
        self, model: Any, decoder_start_token_id: Union[int, Sequence[int]], inputs: dict[str, torch.Tensor],
        output_hidden_states: bool = False, collect: tuple[bool, bool] = (False, False),
    ) -> None:
        super().__init__(model, decoder_start_token_id, output_hidden_states, collect)
        self._inputs = inputs

    def decoder_prompt(self, input_ids: torch.Tensor) -> torch.Tensor:
        start = super().decoder_prompt(input_ids)
        given = self._inputs.get("decoder_input_ids")
        if given is None:
            return start
        given = given.cpu()
        if bool((given[:, 0] != start[:, 0]).all()):  # as transformers: only when no row starts with it
            return torch.cat([start, given], dim=1)
        return given

    def _prompt_mask(self, prompt: torch.Tensor, copies: int) -> Optional[torch.Tensor]:
        mask = self._inputs.get("decoder_attention_mask")
        if mask is None:
            return None
        if mask.shape[1] < prompt.shape[1]:  # the start token put in front
            mask = torch.cat([mask.new_ones((mask.shape[0], 1)), mask], dim=1)
        return mask.to(self.device).repeat_interleave(copies, dim=0)

    def _encode(self, input_ids: torch.Tensor, mask: Optional[torch.Tensor], collect: dict[str, bool]) -> Any:
        embeds = self._inputs.get("inputs_embeds")
        if embeds is None:
            return super()._encode(input_ids, mask, collect)
        return self.model.get_encoder()(inputs_embeds=embeds.to(self.device), attention_mask=mask, return_dict=True,
                                        **collect)
