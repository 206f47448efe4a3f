"""The adapter of a transformers encoder-decoder language model (:class:`EncoderDecoderAdapter`):
the encoder runs once, the decoder is cached."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch

from ._validation import GenerationConfigError
from .adapter_common import (AdapterOptions, HiddenStates, cache_from, folds, gather_positions, logits_out,
                             new_cache, plain_layers, realign, splits_cross_attention)
from .cache_merge import replace_seq2seq_rows, trim_seq2seq_padding, why_unmergeable
from .decode_mask import cross_mask, decode_mask, seq2seq_mask_kind
from .families import accepts, reorder_cache
from .folded_reorder import fold_reorder, settle
from .growing_cache import growing, select_rows

__all__ = ["EncoderDecoderAdapter"]


class EncoderDecoderAdapter(HiddenStates):
    """A transformers seq2seq LM (T5, BART, Pegasus, ...): encoder run once, decoder cached."""

    is_encoder_decoder = True

    def __init__(
        self, model: Any, decoder_start_token_id: Union[int, Sequence[int]], output_hidden_states: bool = False,
        collect: tuple[bool, bool] = (False, False),
    ) -> None:
        self.model = model
        self.device = model.device
        self.device_logits = False
        # One int for every row, or (as transformers accepts) one start token per prompt.
        self.decoder_start_token_id = decoder_start_token_id
        self._options = AdapterOptions(output_hidden_states, False, *collect)
        #: ``(decoder attentions, decoder hidden states, cross attentions)`` of the latest forward
        #: call and the encoder's ``(attentions, hidden states)``, when ``collect`` asks for them
        self.step_outputs: tuple[Any, ...] = (None, None, None)
        self.encoder_step_outputs: Optional[tuple[Any, Any]] = None
        self._cache_key = "cache"
        self._cache: Any = None
        self._encoder_outputs: Any = None
        #: ``sdpa`` / ``eager`` when one-token steps get 4-D masks built here (:mod:`.decode_mask`)
        self._mask_kind = seq2seq_mask_kind(model)
        self._mask_dtype = model.get_input_embeddings().weight.dtype if self._mask_kind else torch.float32
        self._encoder_mask = None
        self._decoder_mask: Optional[torch.Tensor] = None
        self._hidden: Optional[torch.Tensor] = None
        self._copies = 1  # rows per prompt (beams), set by prefill

    @property
    def _encoder_mask(self) -> Optional[torch.Tensor]:
        """The encoder's 2-D mask (None: all ones)."""
        return self._encoder_mask_2d

    @_encoder_mask.setter
    def _encoder_mask(self, mask: Optional[torch.Tensor]) -> None:
        # Every writer assigns it (prefill, select_rows, trims, and a refill after writing its
        # rows in place), so the cross-attention mask built from it is rebuilt only then.
        self._encoder_mask_2d = mask
        self._cross: Optional[torch.Tensor] = None

    def _cross_attention_mask(self, new: int) -> Optional[torch.Tensor]:
        """The encoder mask to feed with ``new`` tokens per row: for one, the 4-D cross-attention
        mask transformers would build from the 2-D one (:func:`.decode_mask.cross_mask`), built
        once per change of the 2-D mask instead of once per step."""
        mask = self._encoder_mask_2d
        if mask is None or self._mask_kind is None or new != 1:
            return mask
        if self._cross is None:
            built = cross_mask(self._mask_kind, mask, self._encoder_outputs.last_hidden_state.dtype)
            self._cross = mask if built is None else built
        return self._cross

    def _decoder_step_mask(self, mask: torch.Tensor, new: int) -> torch.Tensor:
        """The decoder's mask to feed with ``new`` tokens per row: for one, the 4-D mask
        transformers would build from the 2-D one, where :func:`.decode_mask.decode_mask` can."""
        if self._mask_kind is None or new != 1:
            return mask
        cache = getattr(self._cache, "self_attention_cache", None)
        built = decode_mask(self._mask_kind, mask, cache, self._mask_dtype)
        return mask if built is None else built

    def decoder_prompt(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The decoder's first token for each prompt, as a ``[batch, 1]`` column."""
        start = self.decoder_start_token_id
        batch = int(input_ids.shape[0])
        if isinstance(start, int):
            return torch.full((batch, 1), start, dtype=torch.long)
        if len(start) != batch:
            raise GenerationConfigError(
                "decoder_start_token_id", f"a list needs one start token per prompt ({batch}), got {len(start)}"
            )
        return torch.tensor(list(start), dtype=torch.long).view(batch, 1)

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], copies: int = 1
    ) -> torch.Tensor:
        input_ids = input_ids.to(self.device)
        mask = None if attention_mask is None else attention_mask.to(self.device)
        # The encoder runs once per prompt; its outputs are then repeated, as transformers does.
        options = self._options
        collect = dict(output_attentions=True) if options.collect_attentions else {}
        if options.collect_hidden_states:
            collect["output_hidden_states"] = True
        with torch.inference_mode():
            encoded = self._encode(input_ids, mask, collect)
        if collect:  # per prompt, not per copy, as transformers returns them
            self.encoder_step_outputs = (encoded.get("attentions"), encoded.get("hidden_states"))
        if copies > 1:
            encoded["last_hidden_state"] = encoded.last_hidden_state.repeat_interleave(copies, dim=0)
            mask = None if mask is None else mask.repeat_interleave(copies, dim=0)
        self._encoder_outputs, self._encoder_mask = encoded, mask
        self._copies = copies
        self._cache_key, self._cache = new_cache(self.model, encoder_decoder=True)
        # Each prompt's start token, repeated for its copies (transformers expands after choosing it).
        start = self.decoder_prompt(input_ids)
        self._decoder_mask = self._prompt_mask(start, copies)
        return self._forward(start.repeat_interleave(copies, dim=0).to(self.device))

    def _encode(self, input_ids: torch.Tensor, mask: Optional[torch.Tensor], collect: dict[str, bool]) -> Any:
        return self.model.get_encoder()(input_ids=input_ids, attention_mask=mask, return_dict=True, **collect)

    def _prompt_mask(self, prompt: torch.Tensor, copies: int) -> Optional[torch.Tensor]:
        """The decoder prompt's attention mask (none: all ones)."""
        return None

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        self._extend_mask(1)
        return self._forward(tokens.to(self.device)[:, None])

    def advance_many(self, tokens: torch.Tensor, on_host: bool = True) -> torch.Tensor:
        self._extend_mask(tokens.shape[1])
        return self._forward(tokens.to(self.device), keep=tokens.shape[1], on_host=on_host)

    def _extend_mask(self, n: int) -> None:
        if self._decoder_mask is not None:
            ones = self._decoder_mask.new_ones((self._decoder_mask.shape[0], n))
            self._decoder_mask = torch.cat([self._decoder_mask, ones], dim=-1)

    def reorder(self, parent_rows: torch.Tensor) -> None:
        rows = parent_rows.to(self.device)
        if self._within_prompts(rows) and splits_cross_attention(self.model, self._cache):
            # The rows of one prompt hold identical cross-attention states (one encoder output,
            # repeated), so moving rows among them changes nothing there: only the decoder's own
            # states move. That skips the larger half of a beam step's reorder (the encoder's
            # length in every layer), exactly, where transformers copies both halves.
            self_attention = self._cache.self_attention_cache
            if not (folds(self.model) and fold_reorder(self_attention, rows)):
                self_attention.reorder_cache(rows)
        else:
            settle(self._cache)
            self._cache = reorder_cache(self.model, self._cache, rows)

    def _within_prompts(self, rows: torch.Tensor) -> bool:
        """Whether every row's parent is a copy of the same prompt (beam search)."""
        copies = self._copies
        if copies <= 1:
            return False
        own = torch.arange(rows.numel(), device=rows.device) // copies
        return bool((rows // copies == own).all())

    @property
    def supports_ragged(self) -> bool:
        # Left padding in the decoder keeps every distance only with relative attention (T5).
        relative = hasattr(getattr(self.model, "config", None), "relative_attention_num_buckets")
        return relative and plain_layers(getattr(self._cache, "self_attention_cache", None))

    def merge_refusal(self) -> Optional[str]:
        """Why another batch's rows cannot be merged into this one (None when they can)."""
        if not hasattr(getattr(self.model, "config", None), "relative_attention_num_buckets"):
            return f"{type(self.model).__name__}'s decoder has absolute positions (left padding would shift them)"
        if self._copies != 1:
            return "rows are copies of prompts"
        return why_unmergeable(self._cache)

    def replace_rows(self, slots: torch.Tensor, other: EncoderDecoderAdapter, rows: torch.Tensor) -> None:
        """Writes rows ``rows`` of ``other`` (prefilled on its own) into rows ``slots``, in place
        (:func:`ferrogen.cache_merge.replace_seq2seq_rows`)."""
        with torch.inference_mode():
            replace_seq2seq_rows(self, slots.to(self.device), other, rows.to(self.device))

    def trim_padding(self) -> None:
        """Drops leading decoder and trailing encoder positions that are padding in every row."""
        trim_seq2seq_padding(self)

    def select_rows(self, rows: torch.Tensor) -> None:
        rows = rows.to(self.device)
        settle(self._cache)
        if splits_cross_attention(self.model, self._cache) and select_rows(self._cache.self_attention_cache, rows):
            self._cache.cross_attention_cache.reorder_cache(rows)
        else:
            self._cache = reorder_cache(self.model, self._cache, rows)
        encoded = self._encoder_outputs
        encoded["last_hidden_state"] = encoded.last_hidden_state.index_select(0, rows)
        if self._encoder_mask is not None:
            self._encoder_mask = self._encoder_mask.index_select(0, rows)
        if self._decoder_mask is not None:
            self._decoder_mask = self._decoder_mask.index_select(0, rows)

    def crop_rows(self, drop: torch.Tensor) -> None:
        settle(self._cache)
        drop = torch.as_tensor(drop, dtype=torch.long).cpu()
        if drop.numel() == 0 or int(drop.max()) == 0:
            return
        length = self._cache.get_seq_length()
        if bool((drop == drop[0]).all()):
            self._cache.crop(-int(drop[0]))
            if self._decoder_mask is not None:
                self._decoder_mask = self._decoder_mask[:, : length - int(drop[0])]
            return
        if not self.supports_ragged:
            raise NotImplementedError(
                f"model: {type(self.model).__name__}'s decoder has absolute positions; its rows cannot be shifted"
            )
        index, real = realign(drop, length, self.device)
        gather_positions(self._cache.self_attention_cache, index)
        mask = self._decoder_mask
        if mask is None:
            mask = torch.ones((drop.numel(), length), dtype=torch.long, device=self.device)
        self._decoder_mask = mask.gather(1, index) * real

    def _forward(
        self, decoder_input_ids: torch.Tensor, keep: Optional[int] = None, on_host: bool = True
    ) -> torch.Tensor:
        """Logits of the last position (``[rows, vocab]``), or of the last ``keep`` ones."""
        kwargs: dict[str, Any] = {self._cache_key: self._cache, "use_cache": True, "return_dict": True}
        if self._decoder_mask is not None:
            kwargs["decoder_attention_mask"] = self._decoder_step_mask(self._decoder_mask, decoder_input_ids.shape[1])
        options = self._options
        if options.output_hidden_states or options.collect_hidden_states:
            kwargs["output_hidden_states"] = True
        if options.collect_attentions:
            kwargs["output_attentions"] = True
        with torch.inference_mode(), growing(self._cache):
            out = self.model(
                encoder_outputs=self._encoder_outputs,
                attention_mask=self._cross_attention_mask(decoder_input_ids.shape[1]),
                decoder_input_ids=decoder_input_ids,
                **kwargs,
            )
        self._cache = cache_from(out, self._cache_key, self._cache)
        if options.collect_attentions or options.collect_hidden_states:
            self.step_outputs = (out.decoder_attentions if options.collect_attentions else None,
                                 out.decoder_hidden_states if options.collect_hidden_states else None,
                                 out.cross_attentions if options.collect_attentions else None)
        if self._options.output_hidden_states:
            self._hidden = out.decoder_hidden_states[-1]
        logits = out.logits[:, -1] if keep is None else out.logits[:, -keep:]
        if not on_host:  # the model's own tensor, for the caller to pick rows from
            return logits
        return logits_out(logits, self.device_logits, borrow=True)
