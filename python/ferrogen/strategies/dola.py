"""DoLa decoding (``dola_layers``): greedy search or sampling on contrasted logits.

Per step, one forward pass with every layer's hidden states; the last position's hidden state
of each candidate ("premature") layer goes through the model's LM head, and the core replaces
the final logits by ``log_softmax(final) - log_softmax(premature)`` over the tokens at least a
tenth as likely as the best (the rest ``-inf``), contrasting with the candidate layer farthest
from the final one by Jensen-Shannon divergence (averaged over the batch, as there). Processors,
warpers and the choice then run on those logits as in greedy search or sampling.

Parity: transformers 4.55's ``_dola_decoding`` (moved to the Hub in 5.x): the same candidate
layers for ``"low"`` / ``"high"`` / a list, the LM head applied to the raw hidden state (no final
norm), ``output_logits`` the final layer's logits. Decoder-only models only, none with
recurrent layers (4.55 refuses stateful models).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional, Union

import numpy as np
import torch

from .. import _core
from ..families import _has_recurrent_layers
from ..models import DecoderOnlyAdapter
from ..outputs import GenerateOutput
from .base import GenerationRequest
from .greedy import greedy_search
from .sample import sample

__all__ = ["candidate_layers", "dola_decoding"]


def candidate_layers(config: Any, dola_layers: Union[str, list[int], None]) -> list[int]:
    """The hidden-state indices DoLa contrasts with (0: the embeddings), by transformers 4.55's rule.

    Tied embeddings make layer 0 the identity through the LM head, so candidates start at 2
    (at 1 for two-layer models); ``"low"`` / ``"high"`` take every other layer of the lower /
    upper half (of the first / last 20 for models over 40 layers); a list keeps its indices
    below the number of layers.

    Example:
        >>> from types import SimpleNamespace
        >>> candidate_layers(SimpleNamespace(num_hidden_layers=12, tie_word_embeddings=True), "high")
        [6, 8, 10]
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    final = int(text.num_hidden_layers)
    if not getattr(config, "tie_word_embeddings", False):
        start = 0
    elif final > 2:
        start = 2
    else:
        start = 1 if final == 2 else 0
    if dola_layers == "low":
        if start == final // 2:
            return [start]
        return list(range(start, final // 2, 2) if final <= 40 else range(start, 20, 2))
    if dola_layers == "high":
        return list(range(final // 2, final, 2) if final <= 40 else range(final - 20, final, 2))
    if not isinstance(dola_layers, list):  # validated by GenerationConfig: "low", "high" or a list
        raise ValueError(f"dola_layers: must be 'low', 'high' or a list of layer indices, got {dola_layers!r}")
    return [layer for layer in dola_layers if layer < final]


def dola_decoding(request: GenerationRequest) -> GenerateOutput:
    """``dola_layers`` with greedy search (``do_sample=False``) or sampling."""
    model = request.model
    adapter = request.adapter
    name = type(model).__name__
    if not isinstance(adapter, DecoderOnlyAdapter):
        raise ValueError(f"model: DoLa decoding (dola_layers) needs a transformers decoder-only model, got {name}")
    if _has_recurrent_layers(model):
        raise ValueError(f"model: DoLa decoding is not supported with stateful models, such as {name}")
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"model: DoLa decoding needs output embeddings (an LM head); {name} has none")
    layers = candidate_layers(model.config, request.config.dola_layers)
    if not layers:
        final = model.config.get_text_config().num_hidden_layers
        raise ValueError(f"dola_layers: no index of {request.config.dola_layers!r} is below the model's "
                         f"{final} layers; give indices in [0, {final})")
    contrasted = replace(request, adapter=_ContrastingAdapter(adapter, head, layers, request))
    return sample(contrasted) if request.config.do_sample else greedy_search(contrasted)


class _ContrastingAdapter:
    """Stands in for the model adapter in the token loop: the logits it returns are DoLa's."""

    def __init__(self, adapter: DecoderOnlyAdapter, head: Any, layers: list[int], request: GenerationRequest) -> None:
        self._adapter = adapter
        self._head = head
        self._layers = layers
        self._user_hidden = bool(request.return_dict and request.config.output_hidden_states)
        self._keep_raw = request.keep_logits
        adapter._options.collect_hidden_states = True  # every layer's hidden states, every forward
        #: the final layer's logits of the latest step (``output_logits``, as 4.55 returns them)
        self.raw_logits: Optional[torch.Tensor] = None

    def __getattr__(self, name: str) -> Any:  # everything else is the model adapter's
        return getattr(self._adapter, name)

    @property
    def step_outputs(self) -> tuple[Any, Any]:
        attentions, hidden = self._adapter.step_outputs
        return attentions, hidden if self._user_hidden else None

    def prefill(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], copies: int = 1) -> torch.Tensor:
        return self._contrast(self._adapter.prefill(input_ids, attention_mask, copies))

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._contrast(self._adapter.advance(tokens))

    def _contrast(self, logits: torch.Tensor) -> torch.Tensor:
        hidden = self._adapter.step_outputs[1]
        with torch.inference_mode():
            premature = torch.stack([self._head(hidden[layer][:, -1, :]) for layer in self._layers])
        premature_np = np.ascontiguousarray(premature.detach().to("cpu", torch.float32).numpy())
        out = logits.to("cpu", torch.float32, copy=True).contiguous()
        self.raw_logits = logits if self._keep_raw else None
        _core.dola_contrast(out.numpy(), premature_np)
        return out
