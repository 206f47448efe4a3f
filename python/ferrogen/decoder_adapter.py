"""The adapter of a transformers decoder-only language model (:class:`DecoderOnlyAdapter`)."""

from __future__ import annotations

from typing import Any, Optional

import torch

from .adapter_common import (AdapterOptions, HiddenStates, cache_from, folds, gather_positions, logits_out,
                             new_cache, plain_layers, realign)
from .cache_merge import replace_decoder_rows, trim_decoder_padding, why_unmergeable
from .decode_mask import decode_mask, decode_mask_kind, decode_window
from .families import accepts, prepares_own_steps, reorder_cache, step_inputs
from .folded_reorder import fold_reorder, settle
from .growing_cache import growing, select_rows

__all__ = ["DecoderOnlyAdapter"]


class DecoderOnlyAdapter(HiddenStates):
    """A transformers causal LM (GPT-2, GPT-NeoX, Llama, ...) with a dynamic KV cache.

    Mirrors what ``model.generate`` feeds the model so results are token-identical: it keeps
    the state ``generate`` keeps between steps (position ids from the attention mask, the mask
    dropped when it is all ones, ``logits_to_keep=1`` where the model supports it) and turns it
    into each step's inputs with the model's own ``prepare_inputs_for_generation``
    (:func:`ferrogen.families.step_inputs`), so that families with their own step rules (Mamba, ...) get them.
    """

    is_encoder_decoder = False

    def __init__(
        self, model: Any, output_hidden_states: bool = False, rollback: bool = False,
        model_inputs: Optional[dict[str, torch.Tensor]] = None, collect: tuple[bool, bool] = (False, False),
    ) -> None:
        self.model = model
        self.device = model.device
        #: ``(attentions, hidden_states)`` of the latest forward call, when ``collect`` asks for them
        self.step_outputs: tuple[Any, Any] = (None, None)
        #: the caller's position_ids / token_type_ids ([batch, prompt length]), as generate feeds them
        self._given = dict(model_inputs or {})
        #: the caller's cache to continue from (:mod:`ferrogen.cache_in`), checked by ``generate``
        self._given_cache = self._given.pop("past_key_values", None)
        self._token_types: Optional[torch.Tensor] = None
        self._embeds: Optional[torch.Tensor] = None
        self.device_logits = False
        self._options = AdapterOptions(output_hidden_states, rollback, *collect)
        self._keep_one = accepts(model.forward, "logits_to_keep")
        self._takes_positions = accepts(model.forward, "position_ids")
        self._own_steps = prepares_own_steps(model)
        #: ``sdpa`` / ``eager`` when decode steps get a 4-D mask built here (:mod:`.decode_mask`)
        self._mask_kind = decode_mask_kind(model, self._own_steps)
        self._mask_dtype = model.get_input_embeddings().weight.dtype if self._mask_kind else torch.float32
        self._mask_window = decode_window(model) if self._mask_kind else None
        self._cache_key = "cache"
        self._cache: Any = None
        self._mask: Optional[torch.Tensor] = None
        self._positions: Optional[torch.Tensor] = None
        self._hidden: Optional[torch.Tensor] = None

    def decoder_prompt(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], copies: int = 1
    ) -> torch.Tensor:
        input_ids = input_ids.to(self.device)
        embeds = self._given.get("inputs_embeds")
        if attention_mask is None:
            shape = input_ids.shape if embeds is None else embeds.shape[:2]
            attention_mask = torch.ones(shape, dtype=torch.long, device=self.device)
        attention_mask = attention_mask.to(self.device)
        if copies > 1:
            input_ids = input_ids.repeat_interleave(copies, dim=0)
            attention_mask = attention_mask.repeat_interleave(copies, dim=0)
        if self._takes_positions:
            positions = attention_mask.long().cumsum(-1) - 1
            self._positions = positions.masked_fill(attention_mask == 0, 0)
        given = {k: v.to(self.device).repeat_interleave(copies, dim=0) for k, v in self._given.items()}
        if "position_ids" in given:
            self._positions = given["position_ids"]
        self._token_types = given.get("token_type_ids")
        self._embeds = given.get("inputs_embeds")  # the prompt's embeddings: first forward call only
        # transformers drops an all-ones mask, which lets attention take its causal fast path.
        self._mask = None if bool((attention_mask == 1).all()) else attention_mask
        self._cache_key, self._cache = new_cache(self.model, encoder_decoder=False)
        if self._given_cache is not None:  # feed only what it does not hold, as transformers' prefill
            from .cache_in import take_tail

            self._cache, input_ids = self._given_cache, take_tail(self._given_cache, input_ids)
        if self._options.rollback and hasattr(self._cache, "activate_past_recording"):
            self._cache.activate_past_recording()
        return self._forward(input_ids, first=True)

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.device)
        if self._positions is not None:
            self._positions = torch.cat([self._positions, self._positions[:, -1:] + 1], dim=-1)
        if self._mask is not None:
            self._mask = torch.cat([self._mask, self._mask.new_ones((self._mask.shape[0], 1))], dim=-1)
        if self._token_types is not None:  # transformers repeats the last token type
            self._token_types = torch.cat([self._token_types, self._token_types[:, -1:]], dim=-1)
        return self._forward(tokens[:, None])

    def advance_many(self, tokens: torch.Tensor, on_host: bool = True) -> torch.Tensor:
        tokens = tokens.to(self.device)
        n = tokens.shape[1]
        if self._positions is not None:
            steps = torch.arange(1, n + 1, device=self._positions.device)
            self._positions = torch.cat([self._positions, self._positions[:, -1:] + steps], dim=-1)
        if self._mask is not None:
            self._mask = torch.cat([self._mask, self._mask.new_ones((self._mask.shape[0], n))], dim=-1)
        if self._token_types is not None:
            self._token_types = torch.cat([self._token_types, self._token_types[:, -n:]], dim=-1)
        return self._forward(tokens, keep=n, on_host=on_host)

    def reorder(self, parent_rows: torch.Tensor) -> None:
        self._reorder(parent_rows, fold=True)

    def select_rows(self, rows: torch.Tensor) -> None:
        self._reorder(rows, fold=False)

    def _reorder(self, parent_rows: torch.Tensor, fold: bool) -> None:
        rows = parent_rows.to(self.device)
        if not (fold and folds(self.model) and fold_reorder(self._cache, rows)):
            settle(self._cache)
            if not (folds(self.model) and select_rows(self._cache, rows)):
                self._cache = reorder_cache(self.model, self._cache, rows)
        if self._mask is not None:
            self._mask = self._mask.index_select(0, rows)
        if self._positions is not None:
            self._positions = self._positions.index_select(0, rows)
        if self._token_types is not None:
            self._token_types = self._token_types.index_select(0, rows)

    @property
    def supports_ragged(self) -> bool:
        return self._takes_positions and plain_layers(self._cache)

    def merge_refusal(self) -> Optional[str]:
        """Why another batch's rows cannot be merged into this one (None when they can)."""
        if not self._takes_positions:
            return f"{type(self.model).__name__} takes no position_ids"
        if self._given or self._token_types is not None:
            return "position_ids / token_type_ids / inputs_embeds were given"
        if self._given_cache is not None:
            return "the cache was given (refills write into its tensors)"
        return why_unmergeable(self._cache)

    def replace_rows(self, slots: torch.Tensor, other: DecoderOnlyAdapter, rows: torch.Tensor) -> None:
        """Writes rows ``rows`` of ``other`` (prefilled on its own) into rows ``slots``, in place
        (:func:`ferrogen.cache_merge.replace_decoder_rows`)."""
        with torch.inference_mode():
            replace_decoder_rows(self, slots.to(self.device), other, rows.to(self.device))

    def trim_padding(self) -> None:
        """Drops leading positions that are padding in every row."""
        trim_decoder_padding(self)

    def crop_rows(self, drop: torch.Tensor) -> None:
        settle(self._cache)
        drop = torch.as_tensor(drop, dtype=torch.long).cpu()
        if drop.numel() == 0 or int(drop.max()) == 0:
            return
        length = self._cache.get_seq_length()
        if bool((drop == drop[0]).all()):
            cut = length - int(drop[0])
            self._cache.crop(-int(drop[0]))
            if self._mask is not None:
                self._mask = self._mask[:, :cut]
            if self._positions is not None:
                self._positions = self._positions[:, :cut]
            if self._token_types is not None:
                self._token_types = self._token_types[:, :cut]
            return
        if not self.supports_ragged:
            raise NotImplementedError("model: rows cannot be shifted without position_ids support")
        index, real = realign(drop, length, self.device)
        gather_positions(self._cache, index)
        mask = self._mask if self._mask is not None else torch.ones((drop.numel(), length), dtype=torch.long, device=self.device)
        self._mask = mask.gather(1, index) * real
        if self._positions is not None:
            self._positions = self._positions.gather(1, index).masked_fill(~real, 0)
        if self._token_types is not None:
            self._token_types = self._token_types.gather(1, index)

    def _step_mask(self, input_ids: torch.Tensor, first: bool) -> torch.Tensor:
        """The attention mask to feed with ``input_ids``: for one token per row after the prompt,
        the 4-D mask transformers would build from the 2-D one, where :mod:`.decode_mask` can."""
        assert self._mask is not None
        if self._mask_kind is None or first or input_ids.shape[1] != 1:
            return self._mask
        built = decode_mask(self._mask_kind, self._mask, self._cache, self._mask_dtype, self._mask_window)
        return self._mask if built is None else built

    def _forward(
        self, input_ids: torch.Tensor, keep: Optional[int] = None, on_host: bool = True, first: bool = False
    ) -> torch.Tensor:
        """Logits of the last position (``[rows, vocab]``), or of the last ``keep`` ones; ``first``
        for the prompt (the call that fills an empty cache)."""
        state: dict[str, Any] = {"use_cache": True}
        if self._cache is not None:
            state[self._cache_key] = self._cache
        if self._mask is not None:
            state["attention_mask"] = self._step_mask(input_ids, first)
        if self._positions is not None:
            state["position_ids"] = self._positions
        if self._token_types is not None:
            state["token_type_ids"] = self._token_types
        if first and self._embeds is not None:
            state["inputs_embeds"], self._embeds = self._embeds, None
        if self._keep_one:
            state["logits_to_keep"] = keep or 1
        options = self._options
        if options.output_hidden_states or options.collect_hidden_states:
            state["output_hidden_states"] = True
        if options.collect_attentions:
            state["output_attentions"] = True
        with torch.inference_mode(), growing(self._cache):
            inputs = step_inputs(self.model, input_ids, state, first, self._own_steps)
            out = self.model(**inputs, return_dict=True)
        self._cache = cache_from(out, self._cache_key, self._cache)
        self.step_outputs = (out.attentions if options.collect_attentions else None,
                             out.hidden_states if options.collect_hidden_states else None)
        if self._options.output_hidden_states:
            self._hidden = out.hidden_states[-1]
        logits = out.logits[:, -1] if keep is None else out.logits[:, -keep:]
        if not on_host:  # the model's own tensor, for the caller to pick rows from
            return logits
        return logits_out(logits, self.device_logits, borrow=True)
