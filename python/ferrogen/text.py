"""Strings in, strings out: a model directory (or objects) plus a tokenizer.

    gen = ferrogen.pipeline()                       # the embedded model
    gen("And God said", max_new_tokens=12)          # -> [TextResult(prompt=..., text=..., ...)]

``text`` is the continuation alone; ``full_text`` adds the prompt in front (transformers'
``generated_text``, which includes the prompt unless ``return_full_text=False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from .engine_feed import strip_padding
from .generate import generate
from .models import is_encoder_decoder

__all__ = ["TextGenerator", "TextResult", "pipeline", "load_model"]


@dataclass
class TextResult:
    """One generated continuation: the new text, its token ids and why it stopped.

    ``text`` holds only what was generated, without the prompt, as vLLM's
    ``CompletionOutput.text`` and OpenAI's completion ``text``; ``full_text`` is the prompt
    followed by it: what transformers' ``pipeline("text-generation")`` returns as
    ``generated_text`` by default (``return_full_text=True``). Its ``return_full_text=False``
    gives ``text``.
    """

    prompt: str
    text: str
    token_ids: list[int]
    finish_reason: str

    @property
    def full_text(self) -> str:
        """The prompt followed by the generated text (transformers' default ``generated_text``)."""
        return self.prompt + self.text


@dataclass
class ScoredResult(TextResult):
    """A :class:`TextResult` with ``scores``: each new token's log-probability under its step's
    processed scores. What the batch engine's greedy/sampling path returns when asked for
    ``output_scores`` (the Ray path reads them; :func:`ferrogen.engine_feed.run_continuous_texts`)."""

    scores: list[float]


def load_model(path: Union[str, Path], device: str = "cpu", dtype: Optional[str] = None) -> tuple[Any, Any]:
    """Loads a local transformers model directory and its tokenizer (never the network)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    check_device(device)
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model: {path} is not a model directory (no config.json)")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    kwargs: dict[str, Any] = {"local_files_only": True, "config": config}  # config.json is read once
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype)
    if config.is_encoder_decoder:
        model = AutoModelForSeq2SeqLM.from_pretrained(path, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model = model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def check_device(device: Union[str, torch.device]) -> torch.device:
    """``device`` as a ``torch.device``; a ValueError naming ``device`` when it is not one or
    when its backend is not available here (``"cuda"`` on a machine without CUDA)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:0', 'mps')") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device or driver was found"
        raise ValueError(f"device: {device!r} requested but CUDA is not available ({why}); use device='cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device: {device!r} requested but MPS is not available; use device='cpu'")
    return dev


class TextGenerator:
    """Tokenizes a batch (left-padded for decoder-only models), generates, decodes the new tokens."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.encoder_decoder = is_encoder_decoder(model)
        if not self.encoder_decoder:
            tokenizer.padding_side = "left"
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token

    def __call__(self, prompts: Union[str, Sequence[str]], streamer: Any = None, batch_size: Optional[int] = None,
                 refill_fraction: Optional[float] = None, **kwargs: Any) -> list[TextResult]:
        """Generates every prompt; one batch, or with ``batch_size`` the batch engine
        (:mod:`ferrogen.engine`: length-sorted batches, finished rows dropped, input order kept;
        finished rows' places taken by waiting prompts, prefilled ``refill_fraction`` of the batch,
        in (0, 1], at a time: 0.5 by default)."""
        if batch_size is not None:
            from .engine import generate_texts

            batch = [prompts] if isinstance(prompts, str) else list(prompts)
            if refill_fraction is not None:
                kwargs["refill_fraction"] = refill_fraction
            return generate_texts(self, batch, batch_size, streamer=streamer, **kwargs)
        if refill_fraction is not None:
            raise TypeError("refill_fraction: works with batch_size (the batch engine refills its freed slots)")
        if "return_full_text" in kwargs:  # transformers' pipeline argument: both forms are here
            raise TypeError("return_full_text: not an argument here; every TextResult has .text (the generated "
                            "text alone) and .full_text (the prompt followed by it)")
        batch = [prompts] if isinstance(prompts, str) else list(prompts)
        enc = self.tokenizer(batch, return_tensors="pt", padding=True)
        return self._generate_padded(batch, enc["input_ids"], enc["attention_mask"], streamer=streamer, **kwargs)

    def _generate_padded(self, batch: list[str], input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         streamer: Any = None, **kwargs: Any) -> list[TextResult]:
        """The call for prompts ``batch`` already tokenized and padded (the batch engine pads the
        ids it read once: :func:`ferrogen.engine_feed.pad_ids`)."""
        device = getattr(self.model, "device", torch.device("cpu"))
        kwargs.setdefault("tokenizer", self.tokenizer)
        out = generate(
            self.model,
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            streamer=streamer,
            return_dict_in_generate=True,
            **kwargs,
        )
        skip = 1 if self.encoder_decoder else input_ids.shape[1]
        per_prompt = out.sequences.shape[0] // len(batch)
        results = []
        for row, seq in enumerate(out.sequences):
            reason = out.finish_reasons[row]
            new = strip_padding(seq[skip:].tolist(), self.tokenizer.pad_token_id, reason)
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            results.append(TextResult(batch[row // per_prompt], text, new, reason))
        return results


def pipeline(model: Union[str, Path, Any, None] = None, tokenizer: Any = None, device: str = "cpu") -> TextGenerator:
    """A :class:`TextGenerator` for a local model directory (default: the embedded model) or objects."""
    if model is None or isinstance(model, (str, Path)):
        from . import embedded_model_path

        model, loaded_tok = load_model(model or embedded_model_path(), device=device)
        tokenizer = tokenizer or loaded_tok
    if tokenizer is None:
        raise ValueError("tokenizer: required when model is an object rather than a directory")
    return TextGenerator(model, tokenizer)
