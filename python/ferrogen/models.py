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

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence, TypeGuard, Union

import torch

from ._validation import GenerationConfigError
from .families import accepts as _accepts
from .families import prepares_own_steps, reorder_cache, step_inputs
from .cache_merge import (replace_decoder_rows, replace_seq2seq_rows, trim_decoder_padding, trim_seq2seq_padding,
                          why_unmergeable)
from .decode_mask import cross_mask, decode_mask, decode_mask_kind, decode_window, seq2seq_mask_kind
from .folded_reorder import fold_reorder, settle
from .growing_cache import growing, release, select_rows

__all__ = ["ModelAdapter", "MultiTokenAdapter", "adapter_for", "is_multi_token", "logits_to_host"]


def logits_to_host(logits: torch.Tensor) -> torch.Tensor:
    """Last-position logits as a fresh contiguous float32 CPU tensor (one copy, any dtype/device)."""
    return logits.to(device="cpu", dtype=torch.float32, copy=True).contiguous()


def _owns_storage(logits: torch.Tensor) -> bool:
    """Whether ``logits`` is a contiguous float32 CPU tensor that spans its whole storage:
    the fresh output of a language-model head (``logits_to_keep=1``), nothing else in it."""
    return bool(  # torch types the size checks as SymBool (symbolic shapes); here they are plain
        logits.device.type == "cpu"
        and logits.dtype == torch.float32
        and logits.is_contiguous()
        and logits.storage_offset() == 0
        and logits.untyped_storage().nbytes() == logits.numel() * 4
    )


def _logits_out(logits: torch.Tensor, on_device: bool, borrow: bool = False) -> torch.Tensor:
    """``logits_to_host``, or (``on_device``) a fresh float32 copy where the model left them,
    as transformers' beam search takes them. With ``borrow`` (a transformers model, whose head
    allocates its output each call), CPU float32 logits that own their storage are taken
    without a copy, as an ordinary tensor over the same memory (not an inference tensor, so
    callers may still update it in place)."""
    if on_device:
        return logits.to(dtype=torch.float32, copy=True).contiguous()
    if borrow and _owns_storage(logits):
        return torch.from_numpy(logits.detach().numpy())
    return logits_to_host(logits)


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


def _new_cache(model: Any, encoder_decoder: bool) -> tuple[str, Any]:
    """The cache object and the forward keyword it goes under (``cache`` in 5.x); no object
    (the model makes its own on the first call) for the models transformers gives none."""
    from transformers import DynamicCache

    key = "cache" if _accepts(model.forward, "cache") else "past_key_values"
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


def _cache_from(outputs: Any, key: str, previous: Any) -> Any:
    """The cache a forward call returned; ``previous`` when it returns none (RecurrentGemma
    updates the cache object it was given and returns no cache field, as transformers keeps it)."""
    cache = getattr(outputs, key, None)
    if cache is None and key == "cache":
        cache = getattr(outputs, "past_key_values", None)
    return previous if cache is None else cache


def _realign(drop: torch.Tensor, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows of ``length`` positions losing their last ``drop[r]``: the source position of
    every new position (``[rows, new_length]``, right-aligned) and whether it is real."""
    keep = length - drop.to(device=device, dtype=torch.long)
    width = int(keep.max())
    offset = (width - keep)[:, None]
    columns = torch.arange(width, device=device)[None, :]
    return (columns - offset).clamp(min=0), columns >= offset


def _folds(model: Any) -> bool:
    """Whether beam reorders may wait for the next append (:mod:`.folded_reorder`): the model
    leaves reordering to the cache (no ``_reorder_cache`` of its own)."""
    return not callable(getattr(model, "_reorder_cache", None))


def _splits_cross_attention(model: Any, cache: Any) -> bool:
    """Whether the cache is transformers' ``EncoderDecoderCache`` and the model leaves its
    reordering to it (no ``_reorder_cache`` of its own), so its halves can move separately."""
    from transformers.cache_utils import EncoderDecoderCache

    return type(cache) is EncoderDecoderCache and not callable(getattr(model, "_reorder_cache", None))


def _plain_layers(cache: Any) -> bool:
    """Whether every layer of a dynamic cache keeps all positions (no sliding window, no
    recurrent state), so that positions can be dropped row by row. True before prefill."""
    from transformers.cache_utils import DynamicLayer

    return cache is None or all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


def _gather_positions(cache: Any, index: torch.Tensor) -> None:
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
class _Options:
    output_hidden_states: bool = False
    #: The caller will crop cached positions (assisted decoding): sliding-window layers must then
    #: keep what they would drop until the next crop, as transformers' assisted decoding has them.
    rollback: bool = False
    #: keep each forward call's per-layer attentions / hidden states (output_attentions /
    #: output_hidden_states of generate), as ``step_outputs``
    collect_attentions: bool = False
    collect_hidden_states: bool = False


class _HiddenStates:
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


class DecoderOnlyAdapter(_HiddenStates):
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
        self._options = _Options(output_hidden_states, rollback, *collect)
        self._keep_one = _accepts(model.forward, "logits_to_keep")
        self._takes_positions = _accepts(model.forward, "position_ids")
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
        self._cache_key, self._cache = _new_cache(self.model, encoder_decoder=False)
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
        if not (fold and _folds(self.model) and fold_reorder(self._cache, rows)):
            settle(self._cache)
            if not (_folds(self.model) and select_rows(self._cache, rows)):
                self._cache = reorder_cache(self.model, self._cache, rows)
        if self._mask is not None:
            self._mask = self._mask.index_select(0, rows)
        if self._positions is not None:
            self._positions = self._positions.index_select(0, rows)
        if self._token_types is not None:
            self._token_types = self._token_types.index_select(0, rows)

    @property
    def supports_ragged(self) -> bool:
        return self._takes_positions and _plain_layers(self._cache)

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
        index, real = _realign(drop, length, self.device)
        _gather_positions(self._cache, index)
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
        self._cache = _cache_from(out, self._cache_key, self._cache)
        self.step_outputs = (out.attentions if options.collect_attentions else None,
                             out.hidden_states if options.collect_hidden_states else None)
        if self._options.output_hidden_states:
            self._hidden = out.hidden_states[-1]
        logits = out.logits[:, -1] if keep is None else out.logits[:, -keep:]
        if not on_host:  # the model's own tensor, for the caller to pick rows from
            return logits
        return _logits_out(logits, self.device_logits, borrow=True)


class EncoderDecoderAdapter(_HiddenStates):
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
        self._options = _Options(output_hidden_states, False, *collect)
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
        self._cache_key, self._cache = _new_cache(self.model, encoder_decoder=True)
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
        if self._within_prompts(rows) and _splits_cross_attention(self.model, self._cache):
            # The rows of one prompt hold identical cross-attention states (one encoder output,
            # repeated), so moving rows among them changes nothing there: only the decoder's own
            # states move. That skips the larger half of a beam step's reorder (the encoder's
            # length in every layer), exactly, where transformers copies both halves.
            self_attention = self._cache.self_attention_cache
            if not (_folds(self.model) and fold_reorder(self_attention, rows)):
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
        return relative and _plain_layers(getattr(self._cache, "self_attention_cache", None))

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
        if _splits_cross_attention(self.model, self._cache) and select_rows(self._cache.self_attention_cache, rows):
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
        index, real = _realign(drop, length, self.device)
        _gather_positions(self._cache.self_attention_cache, index)
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
        self._cache = _cache_from(out, self._cache_key, self._cache)
        if options.collect_attentions or options.collect_hidden_states:
            self.step_outputs = (out.decoder_attentions if options.collect_attentions else None,
                                 out.decoder_hidden_states if options.collect_hidden_states else None,
                                 out.cross_attentions if options.collect_attentions else None)
        if self._options.output_hidden_states:
            self._hidden = out.decoder_hidden_states[-1]
        logits = out.logits[:, -1] if keep is None else out.logits[:, -keep:]
        if not on_host:  # the model's own tensor, for the caller to pick rows from
            return logits
        return _logits_out(logits, self.device_logits, borrow=True)


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
        return _logits_out(logits[:, -1], self.device_logits)


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
