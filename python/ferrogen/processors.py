"""The logits pipeline on its own: transformers' processors and warpers, in Rust.

:class:`LogitsPipeline` applies everything a :class:`~ferrogen.GenerationConfig` asks of the
scores (repetition penalties, n-gram blocking, bad words, min length, forced tokens, ...,
then temperature, top-k, top-p, min-p, typical, epsilon, eta, renormalisation) in
transformers' order and with its semantics, as one fused pass over a ``[rows, vocab]``
float32 array with the GIL released. Use it in your own decoding loop or server::

    pipe = ferrogen.LogitsPipeline(do_sample=True, top_k=50, top_p=0.9, temperature=0.7)
    scores = pipe.process(input_ids, logits)          # what transformers' processors return
    tokens = pipe.sample(input_ids, logits, seed=0)   # processed and drawn in one call

Conventions where transformers' result is undefined or an error: the warpers and the draw
treat NaN as -inf; a row containing +inf is a distribution shared by its +inf entries; a
row with nothing left to draw raises :class:`~ferrogen.NoValidTokenError`. Ties at the
top-p / typical boundary are broken as ``torch.sort(stable=True)`` would (lower id first).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from . import _core
from ._validation import LENGTH_LIMIT, SEED_LIMIT, int_field
from .config import GenerationConfig

__all__ = ["LogitsPipeline", "prompt_ignore_lengths", "unpadded_rows", "draw_seed"]

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]


def prompt_ignore_lengths(attention_mask: Optional[torch.Tensor]) -> Optional[list[int]]:
    """Left-padding length of every row: the index of its first attended position, as
    transformers 5.x computes it for the repetition penalty."""
    if attention_mask is None:
        return None
    mask = torch.as_tensor(attention_mask)
    return (mask != 0).int().argmax(dim=1).tolist()


def unpadded_rows(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> list[list[int]]:
    """Each row's tokens without padding (the positions the mask attends). With ``inputs_embeds``
    and no ids (``[batch, 0]``), the mask covers the embeddings: every row is empty."""
    ids = torch.as_tensor(input_ids).cpu()
    if attention_mask is None or ids.shape[-1] == 0:
        return ids.tolist()
    mask = torch.as_tensor(attention_mask).cpu() != 0
    return [row[m].tolist() for row, m in zip(ids, mask)]


def encoder_ids(input_ids: torch.Tensor) -> Optional[list[list[int]]]:
    """The encoder input for the ``encoder_*`` processors; ``None`` when it holds a
    negative (dummy) id, as transformers ignores those processors then."""
    ids = torch.as_tensor(input_ids)
    if ids.dim() != 2 or bool((ids < 0).any()):
        return None
    return ids.cpu().tolist()


def draw_seed() -> int:
    """A 63-bit seed from torch's global generator, so ``torch.manual_seed`` reproduces runs."""
    return int(torch.randint(0, 2**63 - 1, (1,)).item())


def _as_config(config: Any, overrides: dict[str, Any]) -> GenerationConfig:
    if config is None:
        base = GenerationConfig()
    elif isinstance(config, GenerationConfig):
        base = config
    elif isinstance(config, dict):
        base = GenerationConfig.from_dict(config)
    elif hasattr(config, "to_dict"):
        base = GenerationConfig.from_transformers(config)
    else:
        raise TypeError(f"config: expected a GenerationConfig or a dict, got {type(config).__name__}")
    return base.merged(**overrides) if overrides else base.copy()


def _host_array(x: ArrayLike, dtype: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise _core.ShapeError(f"{name}: expected a 2-D array [rows, ...], got shape {list(arr.shape)}")
    return np.ascontiguousarray(arr, dtype=dtype)


class LogitsPipeline:
    """transformers' logits processors and warpers of a generation config, as one Rust pipeline.

    ``config`` is a :class:`~ferrogen.GenerationConfig`, a transformers ``GenerationConfig``
    or a dict; keyword arguments override its fields (validated: a bad value raises
    ``ValueError`` naming the field). The pipeline is what ``generate`` builds: processors,
    then (with ``do_sample=True``) warpers, then ``renormalize_logits``.

    Inputs of processors that transformers takes at construction:

    - ``prompt_length``: length of the prompt (``min_new_tokens``, ``begin_suppress_tokens``,
      ``exponential_decay_length_penalty``); default: the width of the first ``input_ids``.
    - ``max_length``: for ``forced_eos_token_id``; default ``prompt_length + max_new_tokens``
      if set, else the config's ``max_length``.
    - ``encoder_input_ids``: for the ``encoder_*`` processors; default: the first
      ``input_ids`` (the prompt, as for decoder-only models).
    - ``attention_mask``: of the prompt; its left padding is not history for
      ``repetition_penalty`` (transformers 5.x behaviour).
    - ``min_tokens_to_keep``: passed to the warpers (beam sampling uses 1 + number of EOS).

    Stateful processors (``no_repeat_ngram_size``) keep per-row tables across calls and
    rebuild them when a row is not a continuation of the previous call's row.

    Example:
        >>> import numpy as np
        >>> pipe = LogitsPipeline(do_sample=True, top_k=2, temperature=0.5)
        >>> pipe.process(np.array([[1, 2]]), np.array([[0.0, 1.0, 2.0]], dtype=np.float32))
        array([[-inf,   2.,   4.]], dtype=float32)
        >>> pipe.names
        ['NanToNegInf', 'TemperatureLogitsWarper', 'TopKLogitsWarper']
    """

    def __init__(
        self,
        config: Any = None,
        *,
        prompt_length: Optional[int] = None,
        max_length: Optional[int] = None,
        encoder_input_ids: Optional[ArrayLike] = None,
        attention_mask: Optional[ArrayLike] = None,
        min_tokens_to_keep: int = 1,
        **overrides: Any,
    ) -> None:
        self.config = _as_config(config, overrides)
        # Checked here, with the config's limits (lengths are torch int64s), not only the core's u64.
        for name, value in (("prompt_length", prompt_length), ("max_length", max_length)):
            if value is not None:
                int_field(0, LENGTH_LIMIT)(name, value)
        int_field(1, LENGTH_LIMIT)("min_tokens_to_keep", min_tokens_to_keep)
        self._prompt_length = prompt_length
        self._max_length = max_length
        self._encoder = None if encoder_input_ids is None else encoder_ids(torch.as_tensor(encoder_input_ids))
        self._ignore = None if attention_mask is None else prompt_ignore_lengths(torch.as_tensor(attention_mask))
        self._min_keep = min_tokens_to_keep
        self._core: Optional[_core.LogitsPipeline] = None
        if prompt_length is not None:
            self._core = self._make(prompt_length, None)

    def _make(self, prompt_length: int, first_ids: Optional[np.ndarray]) -> _core.LogitsPipeline:
        cfg = self.config
        max_length = self._max_length
        if max_length is None:
            max_length = prompt_length + cfg.max_new_tokens if cfg.max_new_tokens is not None else cfg.max_length
        encoder = self._encoder
        if encoder is None and first_ids is not None:
            encoder = encoder_ids(torch.from_numpy(first_ids))
        settings = _core.GenerationSettings(cfg, max_length=max_length, encoder_input_ids=encoder,
                                            prompt_ignore_lengths=self._ignore)
        return _core.LogitsPipeline(settings, prompt_length, self._min_keep)

    def _ready(self, ids: np.ndarray) -> _core.LogitsPipeline:
        if self._core is None:
            self._core = self._make(ids.shape[1], ids)
        return self._core

    @property
    def names(self) -> list[str]:
        """Stage names in order of application (transformers' class names)."""
        core = self._core if self._core is not None else self._make(self._prompt_length or 0, None)
        return list(core.names())

    def process(self, input_ids: ArrayLike, logits: ArrayLike, *, part: str = "all", inplace: bool = False) -> Any:
        """Processed scores of ``logits`` (``[rows, vocab]``) given the rows' tokens so far.

        Returns the same kind as ``logits`` (torch tensor, on its device and dtype, or
        numpy array). ``inplace=True`` writes into ``logits`` when it is a C-contiguous
        float32 CPU array or tensor. ``part``: ``"all"``, ``"processors"`` (what runs
        before user processors in ``generate``) or ``"warpers"`` (what runs after).
        """
        ids = _host_array(input_ids, np.int64, "input_ids")
        scores, back = self._scores(logits, inplace)
        self._ready(ids).process(ids, scores, part)
        return back(scores)

    __call__ = process

    def sample(
        self,
        input_ids: ArrayLike,
        logits: ArrayLike,
        *,
        seed: Optional[int] = None,
        key_length: Optional[int] = None,
        inplace: bool = False,
    ) -> Any:
        """Processes ``logits`` and draws one token per row (int64 ``[rows]``, tensor or array
        like ``logits``). Row ``r``'s draw depends only on ``seed`` (default: drawn from
        torch's global generator), its first ``key_length`` tokens (default: all), how many
        earlier rows have the same ones, and its length: not on batch size, order or threads.
        """
        seed = draw_seed() if seed is None else int_field(0, SEED_LIMIT)("seed", seed)
        if key_length is not None:
            int_field(0, LENGTH_LIMIT)("key_length", key_length)
        ids = _host_array(input_ids, np.int64, "input_ids")
        scores, _ = self._scores(logits, inplace)
        tokens = self._ready(ids).sample(ids, scores, seed, key_length)
        return torch.from_numpy(tokens) if isinstance(logits, torch.Tensor) else tokens

    @staticmethod
    def _scores(logits: ArrayLike, inplace: bool) -> tuple[np.ndarray, Any]:
        """A C-contiguous float32 ``[rows, vocab]`` host array to process, and the function
        that turns the processed array into the value to return."""
        if isinstance(logits, torch.Tensor):
            t = logits.detach()
            direct = inplace and t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()
            host = t if direct else t.to("cpu", torch.float32).contiguous().clone()

            def back(a: np.ndarray) -> Any:
                if direct:
                    return logits
                if inplace:
                    logits.data.copy_(host.view(logits.shape))
                    return logits
                return host.view(logits.shape).to(device=logits.device, dtype=logits.dtype)

            arr = host.numpy()
        else:
            arr = np.asarray(logits)
            if not (inplace and arr.dtype == np.float32 and arr.flags.c_contiguous and arr.flags.writeable):
                arr = np.array(arr, dtype=np.float32, order="C", copy=True)
            shape = arr.shape

            def back(a: np.ndarray) -> Any:
                return a.reshape(shape)

        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2:
            raise _core.ShapeError(f"logits: expected a 2-D array [rows, vocab], got shape {list(arr.shape)}")
        return arr, back

    def __repr__(self) -> str:
        return f"LogitsPipeline({self.config!r})"
