"""Tiny models stored in the repository (``tests/data/<name>/``), so that ferrogen and an
older transformers in a separate venv (``scripts/golden_venv.sh``) load identical weights.

Each directory holds ``config.json`` (plain constructor arguments plus ``"architecture"``)
and ``model.safetensors`` (the state dict without tied copies). Loading goes through the
config class and ``load_state_dict``, not ``from_pretrained``, so it behaves the same under
transformers 4.x and 5.x. Reuse it for any golden test::

    from golden_models import load_stored
    model = load_stored("gpt2")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

DATA = Path(__file__).resolve().parent / "data"
STORED = ("gpt2", "t5", "llama", "qwen2", "bart")

# name -> (config class, model class, constructor arguments, re-draw std or None)
_SPECS: dict[str, tuple[str, str, dict[str, Any], Any]] = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             dict(n_layer=2, n_embd=64, n_head=4, vocab_size=96, n_positions=128, bos_token_id=1, eos_token_id=2), None),
    # T5's default init is so flat that greedy decoding repeats one token: weights re-drawn with std 0.3
    "t5": ("T5Config", "T5ForConditionalGeneration",
           dict(vocab_size=96, d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=4,
                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1), 0.3),
    # decoder-only families with a separate final norm, for DoLa (which reads every layer):
    # 4 untied layers (candidates start at layer 0) and 6 tied ones (they start at layer 2)
    "llama": ("LlamaConfig", "LlamaForCausalLM",
              dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
                   bos_token_id=1, eos_token_id=2), 0.2),
    # encoder-decoder with learned positions (contrastive search's collected outputs and cache)
    "bart": ("BartConfig", "BartForConditionalGeneration",
             dict(vocab_size=96, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None),
             0.4),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
                   bos_token_id=1, eos_token_id=2), 0.2),
}


def load_stored(name: str) -> Any:
    """The stored model ``name`` (one of :data:`STORED`), in eval mode."""
    import transformers

    folder = DATA / name
    spec = json.loads((folder / "config.json").read_text())
    config = getattr(transformers, spec.pop("config_class"))(**spec.pop("config"))
    model = getattr(transformers, spec.pop("architecture"))(config)
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k, v in model.state_dict().items() if k in missing and _is_tied(model, k)}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"{name}: stored weights do not fit: missing {sorted(set(missing) - tied)}, "
                           f"unexpected {sorted(unexpected)}")
    return model.eval()


def _is_tied(model: Any, key: str) -> bool:
    """Whether parameter ``key`` shares storage with a stored parameter (tied embeddings)."""
    tensor = model.state_dict()[key]
    return any(k != key and v.data_ptr() == tensor.data_ptr() for k, v in model.state_dict().items())


def write_stored(name: str) -> Path:
    """(Re)creates ``tests/data/<name>`` from a fixed seed; run from ``scripts/make_goldens.py``."""
    import transformers
    from safetensors.torch import save_file

    config_class, architecture, kwargs, std = _SPECS[name]
    torch.manual_seed(0)
    model = getattr(transformers, architecture)(getattr(transformers, config_class)(**kwargs))
    if std is not None:
        with torch.no_grad():
            for pname, param in model.named_parameters():
                if "norm" not in pname:
                    param.normal_(0.0, std)
    seen: set[int] = set()
    state = {}
    for key, value in model.state_dict().items():
        if value.data_ptr() in seen:
            continue  # a tied copy; load_stored re-ties it
        seen.add(value.data_ptr())
        state[key] = value.detach().clone().contiguous()
    folder = DATA / name
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    spec = {"architecture": architecture, "config_class": config_class, "config": kwargs}
    (folder / "config.json").write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    return folder
