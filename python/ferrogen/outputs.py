"""The result of :func:`ferrogen.generate` when ``return_dict_in_generate=True``.

Shaped like transformers' ``GenerateDecoderOnlyOutput`` / ``GenerateBeamDecoderOnlyOutput``
(and their encoder-decoder twins): the same attribute names in the same order, and the
``ModelOutput`` ways in: attribute, key (``out["sequences"]``), position among the fields
that are set (``out[0]``), ``keys()``, ``values()``, ``items()``, ``to_tuple()``::

    out = ferrogen.generate(model, input_ids=ids, return_dict_in_generate=True, output_scores=True)
    out.sequences.shape, len(out["scores"]), out[0] is out.sequences
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterator, Optional, Union

import torch

__all__ = ["GenerateOutput", "chosen_logprobs", "token_logprobs"]


@dataclass
class GenerateOutput:
    """Fields are ``None`` unless the matching ``output_*`` flag asked for them.

    - ``sequences``: int64 ``[batch * num_return_sequences, length]`` (prompt included for
      decoder-only models, decoder ids for encoder-decoder models).
    - ``sequences_scores``: beam modes, the final length-normalised score per sequence.
    - ``scores``: one float32 ``[rows, vocab]`` tensor per step, after logits processing.
    - ``logits``: one float32 ``[rows, vocab]`` tensor per step, as the model returned them.
    - ``beam_indices``: beam modes, ``[rows, generated_length]`` beam index per step (-1 padded).
    - ``attentions``, ``hidden_states``: every strategy on decoder-only models, with
      ``output_attentions`` / ``output_hidden_states``: one entry per generated token (per forward
      call), each the model's per-layer tuple, as transformers returns them (beams: one row per
      running beam, ``batch × num_beams``, in that step's order, not reordered later; contrastive
      search: the chosen candidate's, as transformers 4.55; assisted decoding: per accepted token,
      greedy's layout).
    - ``encoder_attentions``, ``encoder_hidden_states`` (the encoder's per-layer tuples, one row per
      prompt), ``decoder_attentions``, ``cross_attentions``, ``decoder_hidden_states`` (per step):
      the same on encoder-decoder models.
    - ``cache``: greedy, sampling, contrastive search and the beam modes with ``use_cache`` (the
      default), the model's cache after the last forward call (every position but the last token;
      beams: reordered by the last step's running beams; contrastive: the chosen candidates' rows,
      as transformers does), to continue from.

    Under :func:`ferrogen.enable` the result is transformers' own class instead
    (``ferrogen._hf_outputs``), these ferrogen-only fields kept as attributes.
    - ``finish_reasons`` (ferrogen): per row, ``"eos"``, ``"length"``, ``"stop"`` (a stopping
      criterion) or ``"time"``; constrained beam search reports ``"constraints_unmet"`` for a
      row that misses a constraint; with a grammar constraint, ``"grammar"`` for a row that
      ended on EOS because its constraint could not continue; beam modes, ``"no_hypothesis"``
      for a placeholder row (prompt + padding, score -1e9) when the search finished fewer
      hypotheses than ``num_return_sequences`` (beam sampling under a grammar that allows
      fewer outputs than that).
    - ``beam_tree`` (ferrogen): every beam's parent pointers and scores, with ``output_beam_tree``.
    - ``constraints_satisfied`` (ferrogen): constrained beam search, per row whether it contains
      every constraint.
    """

    sequences: torch.Tensor
    sequences_scores: Optional[torch.Tensor] = None
    scores: Optional[tuple[torch.Tensor, ...]] = None
    logits: Optional[tuple[torch.Tensor, ...]] = None
    beam_indices: Optional[torch.Tensor] = None
    attentions: Optional[tuple[Any, ...]] = None
    hidden_states: Optional[tuple[Any, ...]] = None
    encoder_attentions: Optional[tuple[Any, ...]] = None
    encoder_hidden_states: Optional[tuple[Any, ...]] = None
    decoder_attentions: Optional[tuple[Any, ...]] = None
    cross_attentions: Optional[tuple[Any, ...]] = None
    decoder_hidden_states: Optional[tuple[Any, ...]] = None
    cache: Optional[Any] = None
    finish_reasons: Optional[list[str]] = None
    beam_tree: Optional[Any] = None
    constraints_satisfied: Optional[list[bool]] = None

    @property
    def past_key_values(self) -> Optional[Any]:
        """transformers 4.x's name for :attr:`cache`."""
        return self.cache

    def __getitem__(self, key: Union[str, int, slice]) -> Any:
        """``out["scores"]`` by name, or ``out[0]`` by position among the fields that are set."""
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:
        """Names of the fields that are set (as ``ModelOutput.keys()``)."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list[Any]:
        """Values of the fields that are set, in field order."""
        return [getattr(self, name) for name in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        """``(name, value)`` of the fields that are set, in field order."""
        return [(name, getattr(self, name)) for name in self.keys()]

    def get(self, key: str, default: Any = None) -> Any:
        """The field's value when it is set, else ``default``."""
        value = getattr(self, key, None) if isinstance(key, str) else None
        return default if value is None else value

    def to_tuple(self) -> tuple[Any, ...]:
        """The values that are set, in field order (as ``ModelOutput.to_tuple()``)."""
        return tuple(self.values())

    def to(self, device: Union[str, torch.device]) -> "GenerateOutput":
        """Moves the token and score tensors (also inside tuples) to ``device`` in place and
        returns ``self``, as ``model.generate`` returns them on the model's device.

        Example:
            >>> out = GenerateOutput(sequences=torch.tensor([[1, 2]]), scores=(torch.zeros(1, 4),))
            >>> out.to("cpu").scores[0].device.type
            'cpu'
        """
        for f in fields(self):  # in place: strategies may have set extra attributes
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                setattr(self, f.name, value.to(device))
            elif isinstance(value, tuple) and value and all(isinstance(v, torch.Tensor) for v in value):
                setattr(self, f.name, tuple(v.to(device) for v in value))
        return self


def chosen_logprobs(scores: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``tokens[i]`` for row ``rows[i]`` under one step's processed ``scores``
    ``[rows, vocab]``: ``log_softmax`` over the vocabulary, as transformers'
    ``compute_transition_scores(..., normalize_logits=True)``. The one rule for per-token scores
    of :func:`token_logprobs` (a ``generate`` output) and of the batch engine's refilling loop
    (each step's running rows); ``log_softmax`` reads each row alone, so a row's value does not
    depend on the other rows of its step."""
    return torch.log_softmax(scores.float().cpu(), dim=-1)[rows, tokens]


def token_logprobs(output: Any, skip: int) -> list[list[float]]:
    """Every output row's log-probability of each generated token (``sequences`` from column
    ``skip``) under the processed scores of its step (:func:`chosen_logprobs`; beam rows read
    their step's beam through ``beam_indices``)."""
    rows = output.sequences.shape[0]
    chosen = output.sequences[:, skip : skip + len(output.scores)].cpu()
    beams = getattr(output, "beam_indices", None)  # (transformers' decoder-only classes lack it)
    columns = []
    for t, scores in enumerate(output.scores):
        source = beams[:, t].clamp(min=0).cpu() if beams is not None else torch.arange(rows)
        columns.append(chosen_logprobs(scores, source, chosen[:, t]))
    if not columns:
        return [[] for _ in range(rows)]
    return torch.stack(columns, dim=1).tolist()
