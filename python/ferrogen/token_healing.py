"""Token healing (``token_healing=True`` with ``tokenizer=``): the prompt's last token is
regenerated so that generation is not stuck with a tokenization artefact (a prompt ending in
"http" would otherwise rarely continue as "https://").

Parity: transformers 5.x's ``GenerationMixin.heal_tokens``, step for step: the prompts are
decoded, stripped and re-tokenized; the BOS token becomes padding; each row whose last token is
the prefix of other vocabulary entries has that token replaced by a one-token greedy generation
from the rest of the row, with ``sequence_bias`` +10 on every extension of it (+11 on the token
itself, so healing is not aggressive). The generation that follows keeps the caller's
attention mask, as transformers does.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, cast

import torch

__all__ = ["heal_tokens"]

# One greedy token for a row (``[1, length]``) under a ``sequence_bias``: ``[1, length + 1]``.
GenerateOne = Callable[[torch.Tensor, Optional[torch.Tensor], dict[tuple[int, ...], float]], torch.Tensor]


def check_healing(tokenizer: Any, is_encoder_decoder: bool) -> None:
    """Refuses what transformers would fail on later, before any model work."""
    if tokenizer is None:
        raise ValueError("token_healing: needs the model's tokenizer; pass tokenizer= to generate")
    if is_encoder_decoder:
        raise ValueError("token_healing: heals a decoder-only model's prompt; this model is an encoder-decoder")
    for name in ("bos_token_id", "pad_token_id"):
        if getattr(tokenizer, name, None) is None:
            raise ValueError(f"token_healing: the tokenizer has no {name}, which token healing needs "
                             f"(set tokenizer.{name.removesuffix('_id')})")


def heal_tokens(input_ids: torch.Tensor, tokenizer: Any, generate_one: GenerateOne, eos_ids: list[int]) -> torch.Tensor:
    """The healed prompts (same width as the re-tokenized batch), as transformers' ``heal_tokens``;
    ``eos_ids``: the model's EOS ids (an inner generation infers no mask when padding is EOS)."""
    from transformers.tokenization_python import ExtensionsTrie

    bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
    trie = ExtensionsTrie(tokenizer.get_vocab())
    prompts = [p.strip() for p in tokenizer.batch_decode(input_ids, skip_special_tokens=True)]
    ids = tokenizer(prompts, return_tensors="pt", padding=True).input_ids.to(input_ids.device)
    ids = torch.where(ids == bos, pad, ids)  # healing is not conditioned on BOS
    if ids.numel() == 0:
        return ids
    tail_ids = ids[:, -1].tolist()
    # tails are searched as vocabulary prefixes: spaces spelled as the vocabulary spells them ('Ġ')
    space = tokenizer.convert_tokens_to_ids(" ")
    if space is not None:
        space_tok = tokenizer.convert_ids_to_tokens(space)[0]
        tail_toks = [cast(str, tokenizer.decode(t)).replace(" ", space_tok) for t in tail_ids]
    else:
        tail_toks = [cast(str, tokenizer.decode(t)) for t in tail_ids]
    for row, (tail_id, tail_tok) in enumerate(zip(tail_ids, tail_toks)):
        row_ids = ids[row]
        if bool((row_ids == pad).all()):
            continue
        bias: dict[tuple[int, ...], float] = {
            (tokenizer.convert_tokens_to_ids(alt),): 10.0 for alt in trie.extensions(prefix=tail_tok)}
        if len(bias) == 1:
            continue  # nothing to heal with
        bias[(tail_id,)] += 1.0
        trimmed = row_ids[:-1]
        if trimmed.numel() == 0:
            continue
        if len(row_ids[row_ids != pad]) == 1:
            trimmed[-1] = bos  # a one-token prompt is regenerated from BOS
        prompt = trimmed.unsqueeze(0)
        # transformers' generate infers the mask from the pad token when none is given
        infer = bool((prompt == pad).any()) and pad not in eos_ids
        mask = (prompt != pad).long() if infer else None
        ids[row] = generate_one(prompt, mask, bias)[0]
    return ids
