"""Where assisted decoding's drafts come from: a smaller model, or the rows' own n-grams.

A draft source fills the core's drafts for a round (:meth:`DraftSource.propose`) and
learns the outcome (:meth:`DraftSource.update`) to keep its own state in step. The core
(``_core.AssistedDecoder``) owns the rows' histories, so a source never sees a token it
could disagree with.

Draft-model cache bookkeeping: between rounds the assistant's cache holds every row but
its last ``unfed`` tokens (the same number for all rows), which the next round feeds
first. After a round that fed ``f`` drafts, a row that accepted ``a`` drafts and emitted
``e`` tokens still has ``min(f, a)`` valid drafts cached, so ``e - min(f, a)`` tokens are
unfed; every row drops back to the largest such count.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional, Protocol

import numpy as np
import torch

from .. import _core
from ..config import GenerationConfig
from ..models import adapter_for, is_encoder_decoder, is_multi_token, vocab_size_of
from .base import GenerationRequest

__all__ = ["DraftSource", "AssistantDrafts", "PromptLookupDrafts", "draft_source"]

_DEFAULTS = GenerationConfig()


class DraftSource(Protocol):
    @property
    def supports_ragged(self) -> bool:
        """Whether rows may accept different numbers of drafts (the source copes with shifted rows)."""

    def start(self, request: GenerationRequest, copies: int) -> None:
        """Called once, after the main model's first token, before the first round."""

    def propose(self, core: _core.AssistedDecoder) -> None:
        """Fills the core's drafts for this round (``begin_round`` + ``draft``, or a lookup)."""

    def update(self, emitted: np.ndarray, accepted: np.ndarray, drafted: np.ndarray, active: np.ndarray,
               lockstep: bool) -> None:
        """The round's outcome per row: tokens emitted, drafts accepted, drafts proposed,
        and whether the row goes on."""


def draft_source(request: GenerationRequest) -> DraftSource:
    """The source the request asks for, checked against the main model before anything runs."""
    cfg = request.config
    if cfg.use_mtp:
        raise NotImplementedError("use_mtp: this kind of assisted decoding is not available in ferrogen")
    assistant = request.assistant_model
    lookup = cfg.prompt_lookup_num_tokens
    if cfg.assistant_early_exit is not None:
        if assistant is not None or lookup is not None:
            raise ValueError("assistant_early_exit: drafts come from the model's own early layers; give no "
                             "assistant_model or prompt_lookup_num_tokens with it")
        return EarlyExitDrafts(request)
    if assistant is not None and lookup is not None:
        raise ValueError("prompt_lookup_num_tokens: give either an assistant_model or prompt_lookup_num_tokens, not both")
    if assistant is not None:
        return AssistantDrafts(assistant, request)
    if lookup is None:  # the dispatch picks assisted decoding only with one of the two
        raise ValueError("assistant_model: assisted decoding needs an assistant_model or prompt_lookup_num_tokens")
    return PromptLookupDrafts(cfg.max_matching_ngram_size or 2, int(lookup))


class PromptLookupDrafts:
    """Drafts copied from the row itself: what followed the first earlier occurrence of its
    last n-gram (transformers' ``PromptLookupCandidateGenerator``, for every row of a batch)."""

    supports_ragged = True

    def __init__(self, max_ngram: int, num_tokens: int) -> None:
        self.max_ngram = max_ngram
        self.num_tokens = num_tokens

    def start(self, request: GenerationRequest, copies: int) -> None:
        pass

    def propose(self, core: _core.AssistedDecoder) -> None:
        core.lookup_drafts(self.max_ngram, self.num_tokens)

    def update(self, emitted: np.ndarray, accepted: np.ndarray, drafted: np.ndarray, active: np.ndarray,
               lockstep: bool) -> None:
        pass


def _assistant_setting(name: str, cfg: GenerationConfig, assistant: Any) -> Any:
    """The call's setting when given, else the assistant's generation config, as transformers
    reads these from the assistant model."""
    value = getattr(cfg, name)
    if value == getattr(_DEFAULTS, name):
        own = getattr(getattr(assistant, "generation_config", None), name, None)
        if own is not None:
            return own
    return value


class AssistantDrafts:
    """Drafts from a smaller model sharing the main model's tokenizer.

    ``num_assistant_tokens`` drafts at most per round (transformers' default 20); with the
    ``"heuristic"`` schedules, +2 after a round where every drafting row accepted all its
    drafts and -1 (not below 1) otherwise, per call (as ``"heuristic_transient"``; the
    assistant's config is never modified). A row stops drafting early after a draft whose
    probability is below ``assistant_confidence_threshold`` (0.4 by default, fixed: the
    scikit-learn threshold tuning of transformers is not reproduced).
    """

    def __init__(self, assistant: Any, request: GenerationRequest) -> None:
        if not hasattr(assistant, "config") or not hasattr(assistant, "get_output_embeddings"):
            raise ValueError(f"assistant_model: expected a transformers model, got {type(assistant).__name__}")
        main = request.model
        if is_encoder_decoder(assistant) != is_encoder_decoder(main):
            kinds = {True: "encoder-decoder", False: "decoder-only"}
            raise ValueError(f"assistant_model: is {kinds[is_encoder_decoder(assistant)]} but the main model is "
                             f"{kinds[is_encoder_decoder(main)]}; both must be of the same kind")
        ours, theirs = vocab_size_of(main), vocab_size_of(assistant)
        if ours is not None and theirs is not None and ours != theirs:
            raise ValueError(f"assistant_model: its vocabulary has {theirs} tokens but the main model's has {ours}; "
                             "assisted decoding needs both models to share one tokenizer")
        cfg = request.config
        self.num_tokens = int(_assistant_setting("num_assistant_tokens", cfg, assistant))
        self.schedule = str(_assistant_setting("num_assistant_tokens_schedule", cfg, assistant))
        self.confidence = float(_assistant_setting("assistant_confidence_threshold", cfg, assistant) or 0.0)
        # The decoder start token is the main model's: both decoders must see the same ids.
        adapter = adapter_for(assistant, cfg.decoder_start_token_id, rollback=True)
        if not is_multi_token(adapter):
            raise ValueError("assistant_model: needs a transformers model with a KV cache")
        self.adapter = adapter
        self._unfed = 1
        self._fed: Optional[int] = None

    @property
    def supports_ragged(self) -> bool:
        return bool(self.adapter.supports_ragged)

    def start(self, request: GenerationRequest, copies: int) -> None:
        # The main model has produced one token: the cache of the prompt leaves it unfed.
        self.adapter.prefill(request.input_ids, request.attention_mask, copies)
        self._unfed = 1

    def propose(self, core: _core.AssistedDecoder) -> None:
        core.begin_round()
        self._fed = None
        if not core.any_open():
            return
        feed = torch.from_numpy(core.tails(self._unfed))
        logits = self.adapter.advance_many(feed)[:, -1].contiguous()
        steps = 0
        while True:
            tokens = core.draft(logits.numpy(), self.confidence)
            steps += 1
            if steps >= self.num_tokens or not core.any_open():
                break
            del logits  # one [rows, vocab] tensor at a time
            logits = self.adapter.advance(torch.from_numpy(tokens))
        self._fed = steps - 1

    def update(self, emitted: np.ndarray, accepted: np.ndarray, drafted: np.ndarray, active: np.ndarray,
               lockstep: bool) -> None:
        if self.schedule in ("heuristic", "heuristic_transient") and drafted.any():
            drafting = drafted > 0
            all_taken = bool((accepted[drafting] == drafted[drafting]).all())
            self.num_tokens = self.num_tokens + 2 if all_taken else max(1, self.num_tokens - 1)
        if self._fed is None:
            # Nothing was drafted: no row had room for a draft, so this was the last round.
            return
        fed = self._fed
        unfed = emitted - np.minimum(accepted, fed)
        if lockstep:
            # Rows that go on emitted the same number; finished rows just follow them.
            unfed_now = max(1, int(unfed[active].max()))
            drop = np.full_like(emitted, fed - int(emitted[active].max()) + unfed_now)
        else:
            unfed_now = max(1, int(unfed.max()))
            drop = fed - emitted + unfed_now
        self.adapter.crop_rows(torch.from_numpy(drop))
        self._unfed = unfed_now


def _reads_layer_count(base: Any) -> bool:
    """Whether the base model's forward loops over ``config.num_hidden_layers`` layers (Llama-style
    decoders do: ``self.layers[: self.config.num_hidden_layers]``), which early exit lowers. True
    when the source cannot be read (the first draft then tells)."""
    import inspect

    try:
        source = inspect.getsource(type(base).forward)
    except (OSError, TypeError):
        return True
    return "num_hidden_layers" in source


class EarlyExitDrafts(AssistantDrafts):
    """Self-speculative drafts (``assistant_early_exit=n``): the model itself, run through its first
    ``n`` decoder layers (then its final norm and LM head), with a cache of its own. As transformers'
    ``EarlyExitCandidateGenerator``, the base model's ``config.num_hidden_layers`` is lowered to ``n``
    while drafting, which the decoder-layer loop of Llama-style models reads; models trained for
    early exit (LayerSkip) draft well, others merely correctly (the main model verifies)."""

    def __init__(self, request: GenerationRequest) -> None:
        model = request.model
        base = getattr(model, getattr(model, "base_model_prefix", ""), None)
        config = getattr(base, "config", None)
        layers = getattr(config, "num_hidden_layers", None)
        if not isinstance(layers, int):
            raise ValueError(f"assistant_early_exit: {type(model).__name__} has no base model with "
                             "config.num_hidden_layers to exit early from")
        if not _reads_layer_count(base):
            raise ValueError(f"assistant_early_exit: {type(model).__name__}'s decoder runs all its layers whatever "
                             "config.num_hidden_layers says, so it cannot draft from an early layer (transformers "
                             "fails on it too); use a Llama-style model, or assistant_model= with a smaller model")
        exit_layers = int(request.config.assistant_early_exit or 0)
        if exit_layers > layers:
            raise ValueError(f"assistant_early_exit: {exit_layers} is more than the model's {layers} layers")
        super().__init__(model, request)
        self._base_config: Any = config
        self._exit = exit_layers

    @contextmanager
    def _early(self) -> Iterator[None]:
        full = self._base_config.num_hidden_layers
        self._base_config.num_hidden_layers = self._exit
        try:
            yield
        finally:  # the user's model is theirs again, whatever happened
            self._base_config.num_hidden_layers = full

    def start(self, request: GenerationRequest, copies: int) -> None:
        with self._early():
            super().start(request, copies)

    def propose(self, core: _core.AssistedDecoder) -> None:
        with self._early():
            super().propose(core)
