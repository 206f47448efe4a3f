"""Tiny random models of many architectures transformers ships, for the architecture matrix
(tests/test_architectures.py): two layers, hidden size 32, vocabulary 100, fp32, one seed.

Each entry is the config keywords for ``AutoConfig.for_model(model_type, ...)`` (the names of the
sizes differ between families). Weights are re-drawn with a wider normal so that greedy decoding
does not repeat one token: per-step logits then differ from step to step and from row to row.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

VOCAB = 100
PAD, BOS, EOS = 0, 1, 2

_DENSE: dict[str, Any] = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    vocab_size=VOCAB, max_position_embeddings=128,
)
_GQA: dict[str, Any] = dict(_DENSE, num_key_value_heads=2)
_SEQ2SEQ: dict[str, Any] = dict(
    vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
    decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
)
_SSM: dict[str, Any] = dict(hidden_size=32, state_size=8, num_hidden_layers=2, vocab_size=VOCAB, expand=2, conv_kernel=4)

#: model_type -> (kind, config keywords). Kinds: what the row exercises.
ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("dense, learned positions", dict(n_embd=32, n_layer=2, n_head=4, n_positions=128, vocab_size=VOCAB)),
    "gpt_neox": ("dense, rotary", dict(_DENSE)),
    "gptj": ("dense, partial rotary", dict(n_embd=32, n_layer=2, n_head=4, n_positions=128, rotary_dim=4, vocab_size=VOCAB)),
    "opt": ("dense, learned positions from the mask", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32,
        vocab_size=VOCAB, max_position_embeddings=128)),
    "bloom": ("ALiBi", dict(hidden_size=32, n_layer=2, n_head=4, vocab_size=VOCAB)),
    "falcon": ("GQA, parallel attention", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, vocab_size=VOCAB,
        new_decoder_architecture=True, num_kv_heads=2)),
    "mpt": ("ALiBi", dict(d_model=32, n_heads=4, n_layers=2, max_seq_len=128, vocab_size=VOCAB, expansion_ratio=2)),
    "llama": ("GQA, rotary", dict(_GQA)),
    "mistral": ("sliding window (4)", dict(_GQA, sliding_window=4)),
    "mixtral": ("MoE", dict(_GQA, num_local_experts=4, num_experts_per_tok=2, sliding_window=None)),
    "qwen2": ("GQA, qkv bias", dict(_GQA)),
    "qwen2_moe": ("MoE with shared expert", dict(
        _GQA, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32)),
    "qwen3": ("GQA, qk norm", dict(_GQA, head_dim=8)),
    "phi": ("dense, partial rotary", dict(_DENSE)),
    "phi3": ("GQA, fused qkv", dict(_GQA)),
    "gemma": ("GQA, scaled embeddings", dict(_GQA, head_dim=8)),
    "gemma2": ("sliding window and softcapping", dict(_GQA, head_dim=8, sliding_window=4)),
    "stablelm": ("GQA, partial rotary", dict(_GQA)),
    "starcoder2": ("sliding window (4)", dict(_GQA, sliding_window=4)),
    "olmo": ("dense, non-parametric norm", dict(_DENSE)),
    "cohere": ("GQA, parallel block, logit scale", dict(_GQA)),
    "granite": ("GQA, scaled residuals", dict(_GQA)),
    "mamba": ("SSM", dict(_SSM)),
    "falcon_mamba": ("SSM", dict(_SSM)),
    "jamba": ("hybrid SSM + attention, MoE", dict(
        _GQA, num_experts=2, num_experts_per_tok=1, attn_layer_period=2, attn_layer_offset=1,
        expert_layer_period=2, expert_layer_offset=1, mamba_d_state=8, mamba_dt_rank=4, mamba_expand=2,
        mamba_d_conv=4)),
    "bamba": ("hybrid SSM (Mamba-2) + attention", dict(
        _GQA, attn_layer_indices=[1], mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=8,
        mamba_expand=2, mamba_chunk_size=16)),
    "mamba2": ("SSM (Mamba-2)", dict(
        hidden_size=32, num_hidden_layers=2, vocab_size=VOCAB, state_size=8, expand=2, num_heads=4, head_dim=16,
        n_groups=1, chunk_size=16)),
    "zamba2": ("hybrid SSM + shared attention", dict(
        _GQA, layers_block_type=["mamba", "hybrid"], mamba_d_state=8, mamba_expand=2, n_mamba_heads=4,
        mamba_headdim=16, mamba_ngroups=1, chunk_size=16, num_mem_blocks=1)),
    "falcon_h1": ("hybrid, SSM and attention in parallel", dict(
        _GQA, head_dim=8, mamba_d_ssm=64, mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=8,
        mamba_chunk_size=16)),
    "granitemoehybrid": ("hybrid SSM + attention, MoE", dict(
        _GQA, layer_types=["mamba", "attention"], num_local_experts=2, num_experts_per_tok=1, mamba_n_heads=4,
        mamba_d_head=16, mamba_n_groups=1, mamba_d_state=8, mamba_expand=2, mamba_chunk_size=16,
        shared_intermediate_size=32)),
    "nemotron_h": ("hybrid SSM + attention", dict(
        _GQA, layers_block_type=["mamba", "attention"], head_dim=8, mamba_num_heads=4, mamba_head_dim=16,
        n_groups=1, ssm_state_size=8, chunk_size=16, expand=2)),
    "lfm2": ("hybrid short convolution + attention", dict(_GQA, layer_types=["conv", "full_attention"], block_ff_dim=64)),
    "qwen3_next": ("hybrid linear attention (gated delta) + attention, MoE", dict(
        _GQA, head_dim=8, layer_types=["linear_attention", "full_attention"], linear_num_value_heads=4,
        linear_num_key_heads=2, linear_key_head_dim=8, linear_value_head_dim=8, num_experts=4,
        num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32)),
    "minimax": ("hybrid lightning attention + attention, MoE (model-made cache)", dict(
        _GQA, head_dim=8, layer_types=["linear_attention", "full_attention"], num_local_experts=2,
        num_experts_per_tok=1, block_size=4)),
    "gpt_bigcode": ("multi-query attention", dict(
        n_embd=32, n_layer=2, n_head=4, n_positions=128, vocab_size=VOCAB, multi_query=True)),
    "gpt_neo": ("local attention", dict(
        hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]], window_size=4,
        vocab_size=VOCAB, max_position_embeddings=128)),
    "gemma3_text": ("sliding window, per-layer rotary", dict(_GQA, head_dim=8, sliding_window=4)),
    "cohere2": ("sliding window, no positions in global layers", dict(_GQA, sliding_window=4)),
    "olmoe": ("MoE", dict(_GQA, num_experts=4, num_experts_per_tok=2)),
    "ctrl": ("dense, sinusoidal positions", dict(n_embd=32, n_layer=2, n_head=4, dff=64, n_positions=128, vocab_size=VOCAB)),
    "recurrent_gemma": ("recurrent (RG-LRU) + local attention", dict(
        _DENSE, lru_width=32, attention_window_size=8, head_dim=8, block_types=["recurrent", "attention"])),
    "rwkv": ("RNN, state outside the cache", dict(
        hidden_size=32, num_hidden_layers=2, attention_hidden_size=32, intermediate_size=64, vocab_size=VOCAB,
        context_length=128)),
    "t5": ("encoder-decoder, relative attention", dict(
        vocab_size=VOCAB, d_model=32, d_ff=64, d_kv=8, num_layers=2, num_decoder_layers=2, num_heads=4)),
    "bart": ("encoder-decoder, learned positions", dict(_SEQ2SEQ)),
    "mbart": ("encoder-decoder, pre-norm", dict(_SEQ2SEQ)),
    "pegasus": ("encoder-decoder, sinusoidal positions", dict(_SEQ2SEQ)),
    "marian": ("encoder-decoder, sinusoidal positions", dict(_SEQ2SEQ)),
}


def build(model_type: str, std: float = 0.2, **overrides: Any) -> Any:
    """The tiny random model of ``model_type``, in eval mode (``overrides``: config keywords that
    replace the table's, e.g. ``sliding_window=None`` for a full-attention Mistral; a family the
    table does not list takes all its sizes from them)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    sizes = ARCHITECTURES[model_type][1] if model_type in ARCHITECTURES else {}  # else all in overrides
    kwargs = dict(sizes, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
    kwargs.update(overrides)
    config = AutoConfig.for_model(model_type, **kwargs)
    if config.is_encoder_decoder:
        config.decoder_start_token_id = EOS if model_type == "bart" else PAD
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = auto.from_config(config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" not in name:
                    param.normal_(0.0, std)
    return model.eval()


def padded_batch(encoder_decoder: bool, lengths: tuple[int, ...] = (5, 3, 7), seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts (ids 3..VOCAB-1) padded with PAD: on the left for a decoder-only model,
    on the right for an encoder (as tokenizers pad them)."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        span = slice(0, n) if encoder_decoder else slice(width - n, width)
        ids[row, span] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[row, span] = 1
    return ids, mask
