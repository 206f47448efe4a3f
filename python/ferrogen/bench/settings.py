"""The benchmark's row names and settings: plain data, no torch, so ``ferrogen bench --help``
can list them without importing it."""

from __future__ import annotations

from typing import Any

# prefix_allowed_tokens_fn of the "prefix_beam4" row: the next token must share the last one's
# residue mod 7, among ids below 4096 (valid in every model here), a Python call per beam per
# step on both sides, as a user's function would be.
_ALLOWED_BY_RESIDUE = [list(range(r, 4096, 7)) for r in range(7)]


def _same_residue(batch_id: int, input_ids: Any) -> list[int]:
    return _ALLOWED_BY_RESIDUE[int(input_ids[-1]) % 7]


# Settings of each strategy row; rows whose mode this build lacks are reported as skipped.
STRATEGIES: dict[str, dict[str, Any]] = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, top_k=50, top_p=0.9, temperature=0.8),
    "beam4": dict(num_beams=4, do_sample=False),
    "beam8": dict(num_beams=8, do_sample=False),
    "beam_sample4": dict(num_beams=4, do_sample=True, top_k=50),
    # the same without a seed: ferrogen draws transformers' Exp(1) noise from torch's global generator
    "beam_sample4_torchrng": dict(num_beams=4, do_sample=True, top_k=50),
    "group8x4": dict(num_beams=8, num_beam_groups=4, diversity_penalty=0.5, do_sample=False),
    "contrastive": dict(penalty_alpha=0.6, top_k=4, do_sample=False),
    "dola-high": dict(dola_layers="high", repetition_penalty=1.2, do_sample=False),
    # two constraints: a two-token phrase and one of two alternatives (ids valid in every model here)
    "constrained4": dict(num_beams=4, do_sample=False, force_words_ids=[[1000, 1001], [[2000], [3000, 3001]]]),
    "prefix_beam4": dict(num_beams=4, do_sample=False, prefix_allowed_tokens_fn=_same_residue),
    # classifier-free guidance (issue 22): a second, unconditional forward pass per step on both sides
    "cfg1.5": dict(do_sample=False, guidance_scale=1.5),
    "cfg1.5_beam4": dict(num_beams=4, do_sample=False, guidance_scale=1.5),
    "watermark": dict(do_sample=False, watermarking_config={"greenlist_ratio": 0.25, "bias": 2.0}),
    # SynthID Text (issue 22): 9 keys (tournament depth), 5-grams, transformers' default table
    "synthid": dict(do_sample=False, watermarking_config={"ngram_len": 5, "keys": [654, 400, 836, 123, 340, 443,
                                                                                   597, 160, 57]}),
    # samplers transformers lacks (issue 18): its side runs DRY and XTC as torch LogitsProcessors
    "dry+xtc+min_p": dict(do_sample=True, top_k=0, dry_multiplier=0.8, dry_sequence_breakers=[[13], [25], [1], [9]],
                          xtc_probability=0.5, xtc_threshold=0.1, min_p=0.05),
}
# Strategies whose transformers side runs in the golden venv (transformers 4.55.4): 5.x moved
# them (DoLa too) to Hub repositories (custom_generate), which a machine without network cannot load.
GOLDEN_SIDE = {"contrastive", "constrained4", "group8x4", "dola-high"}
# Rows whose ferrogen side passes no ``seed`` (every other sampling row passes seed=0, the core's
# counter-based noise): it draws from torch's global generator as transformers does. Both sides
# call torch.manual_seed(0) before every run, so the row also says whether their tokens agree.
TORCH_RNG = {"beam_sample4_torchrng"}

# --models: what each name builds (bench/models.py builds them)
MODELS: dict[str, str] = {
    "embedded": "the embedded KJV GPT-2 (ferrogen.embedded_model_path())",
    "gpt2-2x128": "random GPT-2, 2 layers, d=128, V=50257",
    "gpt2-6x512": "random GPT-2, 6 layers, d=512, V=50257",
    "gpt2-8x512": "random GPT-2, 8 layers, d=512, strong first 2 layers (the assisted pair's main model)",
}
# --assisted: main model and its assistant
ASSISTED_PAIRS: dict[str, str] = {
    "embedded": "the embedded model, assistant: its first layer",
    "gpt2-8x512": "gpt2-8x512, assistant: its first 2 layers",
}
