"""Reference implementations of the llama.cpp / vLLM / text-generation-webui samplers, written
from their source to check ferrogen's against (docs/samplers.md names each file).

- vLLM ``vllm/model_executor/layers/utils.py::apply_penalties`` (presence/frequency): torch.
- llama.cpp ``src/llama-sampling.cpp`` (top-n-sigma, xtc, temp_ext, mirostat, dry): NumPy,
  float32 where llama.cpp computes in float.
- text-generation-webui ``modules/sampler_hijack.py::DRYLogitsProcessor``: plain Python.
"""

from __future__ import annotations

import numpy as np
import torch


def vllm_penalties(logits: torch.Tensor, output_tokens: list[list[int]], presence: float,
                   frequency: float) -> torch.Tensor:
    """vLLM's additive penalties over each row's output tokens (bin counts, then two subtractions)."""
    rows, vocab = logits.shape
    counts = torch.zeros((rows, vocab + 1), dtype=torch.long)
    for r, toks in enumerate(output_tokens):
        counts[r].scatter_add_(0, torch.tensor(toks, dtype=torch.long), torch.ones(len(toks), dtype=torch.long))
    counts = counts[:, :vocab]
    mask = counts > 0
    out = logits.clone()
    out -= torch.tensor([frequency], dtype=torch.float32).unsqueeze(1) * counts
    out -= torch.tensor([presence], dtype=torch.float32).unsqueeze(1) * mask
    return out


def llama_top_n_sigma(logits: np.ndarray, n: float) -> np.ndarray:
    x = logits.astype(np.float32).copy()
    valid = x != -np.inf
    if n <= 0 or x.size <= 1:
        return x
    mx = x[valid].max()
    mean = np.float32(x[valid].sum(dtype=np.float32) / np.float32(valid.sum()))
    std = np.float32(np.sqrt(np.sum((x[valid] - mean).astype(np.float64) ** 2) / valid.sum()))
    x[x < mx - np.float32(n) * std] = -np.inf
    return x


def _softmax32(x: np.ndarray) -> np.ndarray:
    e = np.exp((x - x.max()).astype(np.float32))
    return (e / e.sum(dtype=np.float32)).astype(np.float32)


def llama_xtc(logits: np.ndarray, threshold: float, min_keep: int = 1) -> np.ndarray:
    """llama.cpp's XTC once its coin has fired (chance <= probability)."""
    x = logits.astype(np.float32).copy()
    live = np.flatnonzero(x > -np.inf)
    if threshold > 0.5 or live.size < 2:
        return x
    p = _softmax32(x[live])
    order = np.argsort(-p, kind="stable")
    pos_last = 0
    for i, j in enumerate(order):
        if p[j] >= np.float32(threshold):
            pos_last = i
        else:
            break
    if live.size - pos_last >= min_keep and pos_last > 0:
        x[live[order[:pos_last]]] = -np.inf
    return x


def llama_dynatemp(logits: np.ndarray, temp: float, delta: float, exponent: float) -> np.ndarray:
    x = logits.astype(np.float32).copy()
    live = np.flatnonzero(x > -np.inf)
    if live.size <= 1:
        return x
    lo, hi = max(0.0, temp - delta), temp + delta
    max_entropy = -np.log(np.float32(1.0) / live.size)
    p = _softmax32(x[live])
    entropy = -np.sum(p[p > 0] * np.log(p[p > 0]), dtype=np.float32)
    t = lo + (hi - lo) * (entropy / max_entropy) ** exponent
    x[live] = x[live] / np.float32(t)
    return x


def llama_mirostat_v2_keep(logits: np.ndarray, mu: float) -> np.ndarray:
    """The kept mask of one mirostat v2 step."""
    p = _softmax32(logits.astype(np.float32))
    order = np.argsort(-p, kind="stable")
    keep = np.zeros(p.size, dtype=bool)
    for j in order:
        if -np.log2(p[j]) > mu:
            break
        keep[j] = True
    if not keep.any():
        keep[order[0]] = True
    return keep


class LlamaMirostat:
    """llama.cpp's ``llama_sampler_mirostat_apply`` (v1, ``m = 100``) and
    ``llama_sampler_mirostat_v2_apply`` over several steps: the kept set for the current ``mu``,
    then, once the caller has chosen a token from it, ``mu -= eta * (-log2 p - tau)`` with ``p``
    the chosen token's probability renormalised over the kept set. float32 as llama.cpp."""

    def __init__(self, mode: int, tau: float, eta: float, vocab: int, m: int = 100):
        self.mode, self.tau, self.eta, self.vocab, self.m = mode, np.float32(tau), np.float32(eta), vocab, m
        self.mu = np.float32(2.0) * self.tau
        self._kept_p: dict[int, np.float32] = {}

    def keep(self, logits: np.ndarray) -> np.ndarray:
        p = _softmax32(logits.astype(np.float32))
        order = np.argsort(-p, kind="stable")
        if self.mode == 1:
            sp = p[order]
            t = np.log(np.arange(2, self.m + 1, dtype=np.float32) / np.arange(1, self.m, dtype=np.float32))
            n = min(self.m - 1, p.size - 1)
            b = np.log(sp[:n] / sp[1:n + 1])
            s_hat = np.float32((t[:n] * b).sum(dtype=np.float32) / (t[:n] * t[:n]).sum(dtype=np.float32))
            eps = s_hat - np.float32(1)
            k = np.power(eps * np.power(np.float32(2), self.mu) / (1 - np.power(np.float32(self.vocab), -eps)),
                         1 / s_hat, dtype=np.float32)
            k = 0 if not np.isfinite(k) else int(min(k, 2**31 - 1))
            kept = order[:max(k, 1)]
        else:
            n = 0
            while n < p.size and not (-np.log2(p[order[n]]) > self.mu):
                n += 1
            kept = order[:max(n, 1)]
        mask = np.zeros(p.size, dtype=bool)
        mask[kept] = True
        mass = p[kept].sum(dtype=np.float32)
        self._kept_p = {int(j): p[j] / mass for j in kept}
        return mask

    def accept(self, token: int) -> None:
        surprise = -np.log2(self._kept_p[token])
        self.mu = np.float32(self.mu - self.eta * (surprise - self.tau))


def llama_dry(tokens: list[int], vocab: int, multiplier: float, base: float, allowed_length: int,
              breakers: list[list[int]], last_n: int | None = None) -> np.ndarray:
    """The penalty llama.cpp's DRY subtracts from every token (restart sequences, reverse
    Z-algorithm, exponent clamp), as a float64 vector."""
    last = tokens if last_n is None else tokens[-last_n:]
    n = len(last)
    pen = np.zeros(vocab)
    if multiplier == 0 or base < 1 or n <= allowed_length:
        return pen
    rat = lambda i: last[n - 1 - i]  # noqa: E731  (llama.cpp's ring_buffer::rat)
    rep_limit = n
    for i in range(n):
        longest = -1
        for b in breakers:
            if b[0] != rat(i):
                continue
            tail = b[1:]
            if len(tail) > longest and len(tail) <= i and all(tail[o] == rat(i - o - 1) for o in range(len(tail))):
                longest = len(tail)
        if longest >= 0:
            rep_limit = i - longest
            break
    if rep_limit < allowed_length:
        return pen
    count = [0] * n
    lst = n - 1
    for k in range(1, n):  # the naive form of llama.cpp's Z-box loop
        m = 0
        while m + k < n and rat(m) == rat(m + k):
            m += 1
        count[lst - k] = min(m, rep_limit)
    best: dict[int, int] = {}
    for i in range(n - 1):
        if count[i] >= allowed_length:
            t = rat(n - 2 - i)
            best[t] = max(best.get(t, 0), count[i])
    max_exp = int(88.7228391 / np.log(np.float32(base))) if base > 1.000001 else 0
    single = {b[0] for b in breakers if len(b) == 1}
    for t, length in best.items():
        if t in single or t >= vocab:
            continue
        e = length - allowed_length
        if max_exp > 0 and e > max_exp:
            e = max_exp
        pen[t] = multiplier * base ** e
    return pen


def tgw_dry(tokens: list[int], vocab: int, multiplier: float, base: float, allowed_length: int,
            breakers: set[int]) -> np.ndarray:
    """text-generation-webui's DRYLogitsProcessor for one row (single-token breakers, matches
    capped at 50 tokens), as the penalty per token."""
    pen = np.zeros(vocab)
    last_token = tokens[-1]
    if last_token in breakers:
        return pen
    match_indices = [i for i, v in enumerate(tokens[:-1]) if v == last_token]
    match_lengths: dict[int, int] = {}
    for i in match_indices:
        next_token = tokens[i + 1]
        if next_token in breakers:
            continue
        length = 1
        while length < 50:
            j = i - length
            if j < 0:
                break
            previous = tokens[-(length + 1)]
            if tokens[j] != previous or previous in breakers:
                break
            length += 1
        match_lengths[next_token] = max(length, match_lengths.get(next_token, 0))
    for t, length in match_lengths.items():
        if length >= allowed_length:
            pen[t] = multiplier * base ** (length - allowed_length)
    return pen
