"""ferrogen's public API under ``mypy --strict`` (CI runs ``scripts/build_docs.sh``, which checks this file).

Run it: ``python examples/typed_usage.py`` prints a few generations of the embedded model.
"""

from __future__ import annotations

import warnings
from typing import Union

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationMixin, PreTrainedTokenizerBase

import ferrogen
from ferrogen import GenerateOutput, GenerationConfig, GenerationMode, TextResult


def load() -> tuple[GenerationMixin, PreTrainedTokenizerBase]:
    path = ferrogen.embedded_model_path()
    model: GenerationMixin = AutoModelForCausalLM.from_pretrained(path)
    tok: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(path)
    return model, tok


def greedy_ids(model: GenerationMixin, input_ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    config = GenerationConfig(max_new_tokens=new_tokens)
    assert config.generation_mode() is GenerationMode.GREEDY
    result: Union[torch.Tensor, GenerateOutput] = ferrogen.generate(model, input_ids, generation_config=config)
    assert isinstance(result, torch.Tensor)
    return result


def scored(model: GenerationMixin, input_ids: torch.Tensor) -> GenerateOutput:
    out = ferrogen.generate(model, input_ids, max_new_tokens=4, return_dict_in_generate=True, output_scores=True)
    assert isinstance(out, GenerateOutput)
    reasons: list[str] = out.finish_reasons or []
    first: torch.Tensor = out["sequences"]
    assert first is out.sequences and len(reasons) == first.shape[0]
    return out


def drop_in(model: GenerationMixin, input_ids: torch.Tensor) -> torch.Tensor:
    with ferrogen.patched(model) as patched_model:
        assert ferrogen.is_enabled(patched_model)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ferrogen.FallbackWarning)
            out = patched_model.generate(input_ids, max_new_tokens=4)
    assert isinstance(out, torch.Tensor)
    folder: str = ferrogen.custom_generate_path("contrastive_search")
    assert folder.endswith("contrastive_search")
    return out


def strings() -> list[str]:
    generator = ferrogen.pipeline(ferrogen.embedded_model_path())
    results: list[TextResult] = generator(["And God said", "Jesus wept"], max_new_tokens=6)
    return [r.text for r in results]


def main() -> None:
    model, tok = load()
    ids: torch.Tensor = tok("And God said", return_tensors="pt")["input_ids"]
    print(greedy_ids(model, ids, 5).tolist())
    print(scored(model, ids).keys())
    print(drop_in(model, ids).tolist())
    print(strings())


if __name__ == "__main__":
    main()
