"""Model adapters: the only place that runs a forward pass.

An adapter turns "here are the next tokens" into "here are the logits of the next
position" for one kind of model, keeping the KV cache, attention mask and position
ids in step. Strategies talk to adapters only through :class:`ModelAdapter`, so a
strategy never checks ``is_encoder_decoder`` inside its loop.

Example::

    adapter = adapter_for(model)
    logits = adapter.prefill(input_ids, attention_mask)   # float32 [rows, vocab], CPU
    logits = adapter.advance(next_tokens)                  # one step further
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence, TypeGuard, Union

import torch

from .adapter_common import logits_out, logits_to_host
from .decoder_adapter import DecoderOnlyAdapter
from .seq2seq_adapter import EncoderDecoderAdapter

__all__ = ["DecoderOnlyAdapter", "EncoderDecoderAdapter", "ModelAdapter", "MultiTokenAdapter", "PlainTorchAdapter",
           "adapter_for", "is_encoder_decoder", "is_multi_token", "logits_to_host", "vocab_size_of"]


class ModelAdapter(Protocol):
    """What a decoding strategy needs from a model."""

    is_encoder_decoder: bool
    device: torch.device
    #: When true, ``prefill`` / ``advance`` return float32 logits on ``device`` instead of
    #: the host (a strategy that keeps the scores there sets it before ``prefill``).
    device_logits: bool

    def decoder_prompt(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The token history the decoder starts from (the prompt, or decoder start tokens)."""

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], copies: int = 1
    ) -> torch.Tensor:
        """Runs the prompt, each row repeated ``copies`` times (beams, return sequences);
        returns float32 CPU logits ``[rows * copies, vocab]`` of the next position."""

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feeds one token per row (int64 ``[rows]``); returns the next logits."""

    def reorder(self, parent_rows: torch.Tensor) -> None:
        """Keeps, for row ``i``, the state of row ``parent_rows[i]`` (beam search)."""

    def last_hidden_state(self) -> Optional[torch.Tensor]:
        """Last layer's hidden state of the latest forward pass, when requested."""


class MultiTokenAdapter(ModelAdapter, Protocol):
    """What contrastive search and assisted decoding need on top of :class:`ModelAdapter`
    (the transformers adapters have it; a plain torch module has no cache to work with).

    ``supports_ragged`` tells whether rows may be shifted against each other with left
    padding (:meth:`crop_rows` with unequal drops): true when positions come from
    position ids (decoder-only) or attention is relative (T5's decoder).
    """

    @property
    def supports_ragged(self) -> bool:
        """Whether rows may be shifted against each other (see above)."""

    def hidden_states(self) -> Optional[torch.Tensor]:
        """Last layer's hidden states of every position of the latest forward pass."""

    def advance_many(self, tokens: torch.Tensor, on_host: bool = True) -> torch.Tensor:
        """Feeds ``n`` tokens per row (int64 ``[rows, n]``); returns float32 CPU logits
        ``[rows, n, vocab]`` of the positions after each of them (with ``on_host=False``,
        the model's own logits tensor, on its device, for the caller to pick rows from)."""

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keeps, for row ``i``, the state of row ``rows[i]``; the row count may change."""

    def crop_rows(self, drop: torch.Tensor) -> None:
        """Forgets the last ``drop[r]`` cached positions of row ``r`` (int64 ``[rows]``); rows
        left shorter than others are shifted right and padded on the left (masked)."""


def is_multi_token(adapter: ModelAdapter) -> TypeGuard[MultiTokenAdapter]:
    """Whether ``adapter`` can feed several tokens per row and drop cached positions."""
    return hasattr(adapter, "advance_many")


class PlainTorchAdapter:
    """Any ``torch.nn.Module`` mapping ``input_ids [rows, len]`` to logits ``[rows, len, vocab]``
    (or an object with ``.logits``). It has no cache, so each step re-runs the whole sequence."""

    is_encoder_decoder = False

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        try:
            self.device = next(model.parameters()).device
        except StopIteration:
            self.device = torch.device("cpu")
        self.device_logits = False
        self._ids: Optional[torch.Tensor] = None

    def decoder_prompt(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], copies: int = 1
    ) -> torch.Tensor:
        self._ids = input_ids.to(self.device).repeat_interleave(copies, dim=0)
        return self._forward()

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        assert self._ids is not None
        self._ids = torch.cat([self._ids, tokens.to(self.device)[:, None]], dim=-1)
        return self._forward()

    def reorder(self, parent_rows: torch.Tensor) -> None:
        assert self._ids is not None
        self._ids = self._ids.index_select(0, parent_rows.to(self.device))

    def last_hidden_state(self) -> Optional[torch.Tensor]:
        return None

    def _forward(self) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model(self._ids)
        logits = getattr(out, "logits", out)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
            raise ValueError(
                "model: a plain torch module must return logits of shape [batch, length, vocab] "
                f"(or an object with .logits), got {type(logits).__name__}"
            )
        return logits_out(logits[:, -1], self.device_logits)


def is_encoder_decoder(model: Any) -> bool:
    config = getattr(model, "config", None)
    return bool(getattr(config, "is_encoder_decoder", False))


def adapter_for(
    model: Any,
    decoder_start_token_id: Union[int, Sequence[int], None] = None,
    output_hidden_states: bool = False,
    rollback: bool = False,
    model_inputs: Optional[dict[str, torch.Tensor]] = None,
    collect: tuple[bool, bool] = (False, False),
) -> ModelAdapter:
    """Picks the adapter for ``model``: transformers decoder-only, encoder-decoder, or plain torch.
    ``rollback``: the caller will crop cached positions (assisted decoding); ``model_inputs``:
    ``position_ids`` / ``token_type_ids`` / ``inputs_embeds`` for a decoder-only model, ``inputs_embeds`` /
    ``decoder_input_ids`` / ``decoder_attention_mask`` for an encoder-decoder one (checked by ``generate``);
    ``collect``: keep each step's (attentions, hidden states)."""
    if is_encoder_decoder(model):
        if decoder_start_token_id is None:
            raise ValueError(
                "decoder_start_token_id: an encoder-decoder model needs decoder_start_token_id "
                "(or bos_token_id) in its generation config"
            )
        if model_inputs:  # the caller's inputs_embeds / decoder_input_ids / decoder_attention_mask
            from .seq2seq_inputs import Seq2SeqInputsAdapter

            return Seq2SeqInputsAdapter(model, decoder_start_token_id, model_inputs, output_hidden_states, collect)
        return EncoderDecoderAdapter(model, decoder_start_token_id, output_hidden_states, collect)
    if hasattr(model, "config") and hasattr(model, "get_output_embeddings"):
        return DecoderOnlyAdapter(model, output_hidden_states, rollback, model_inputs, collect)
    if isinstance(model, torch.nn.Module):
        return PlainTorchAdapter(model)
    raise TypeError(
        f"model: expected a transformers PreTrainedModel or a torch.nn.Module, got {type(model).__name__}"
    )


def vocab_size_of(model: Any) -> Optional[int]:
    """Vocabulary size from the model's config, when it has one."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    return getattr(text, "vocab_size", None)
