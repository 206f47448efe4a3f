"""The benchmark's models: random GPT-2s built in-process (no download) and the embedded model."""

from __future__ import annotations

from typing import Any

import torch

import ferrogen

from .settings import MODELS


def random_gpt2(layers: int, width: int, vocab: int = 50257) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    # no EOS: every row runs to --new-tokens without a min-length processor on either side
    cfg = GPT2Config(n_layer=layers, n_embd=width, n_head=max(1, width // 64), vocab_size=vocab, n_positions=512,
                     eos_token_id=None)
    return GPT2LMHeadModel(cfg).eval()


def layered_gpt2(layers: int, width: int, vocab: int = 50257, strong: int = 2) -> Any:
    """A random GPT-2 whose first ``strong`` blocks carry most of the computation (weights std
    0.05) and the others perturb it (std 0.01): cut to ``strong`` layers it is an assistant
    that agrees with it often but not always. Default-initialised random GPT-2s just repeat
    their last token, which makes any assistant look perfect."""
    model = random_gpt2(layers, width, vocab)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln" in name:
                continue
            weak = name.startswith("transformer.h.") and int(name.split(".")[2]) >= strong
            param.normal_(0.0, 0.01 if weak else 0.05)
    return model


def truncated(model: Any, layers: int) -> Any:
    """``model`` keeping its first ``layers`` blocks (same embeddings, final norm, head)."""
    cfg = model.config.__class__(**{**model.config.to_dict(), "n_layer": layers})
    small = type(model)(cfg)
    keep = {k: v for k, v in model.state_dict().items()
            if not k.startswith("transformer.h.") or int(k.split(".")[2]) < layers}
    small.load_state_dict(keep)
    return small.eval()


def load_models(names: list[str], device: torch.device = torch.device("cpu")) -> dict[str, tuple[Any, int]]:
    """name -> (model on ``device``, vocab size)."""
    models: dict[str, tuple[Any, int]] = {}
    for name in names:
        if name == "embedded":
            model, _ = ferrogen.text.load_model(ferrogen.embedded_model_path())
        elif name == "gpt2-2x128":
            model = random_gpt2(2, 128)
        elif name == "gpt2-6x512":
            model = random_gpt2(6, 512)
        elif name == "gpt2-8x512":
            model = layered_gpt2(8, 512)
        else:
            raise SystemExit(f"--models: unknown model {name!r} (one of {', '.join(MODELS)})")
        models[name] = (model.to(device), model.config.vocab_size)
    return models
