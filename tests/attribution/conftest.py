"""Tiny random models of every family in the site table, with every weight perturbed, so that
norm gains (Gemma's zero-initialised γ included) and biases are all far from their defaults."""

from collections.abc import Callable

import pytest
import torch
from tests.conftest import FAMILIES, VOCAB, _small, tiny_tokenizer
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GemmaConfig,
    GemmaForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedModel,
    SmolLM3Config,
    SmolLM3ForCausalLM,
)

from probewatch.models.loading import LoadedModel

EXTRA: dict[str, Callable[[], PreTrainedModel]] = {
    "llama_bias": lambda: LlamaForCausalLM(
        LlamaConfig(**_small(), attention_bias=True, mlp_bias=True)
    ),
    "gemma": lambda: GemmaForCausalLM(GemmaConfig(**_small(head_dim=8))),
    "gemma2": lambda: Gemma2ForCausalLM(
        Gemma2Config(**_small(head_dim=12), final_logit_softcapping=3.0)
    ),
    "olmo2": lambda: Olmo2ForCausalLM(Olmo2Config(**_small())),
    "phi3": lambda: Phi3ForCausalLM(Phi3Config(**_small(), pad_token_id=0)),
    "smollm3": lambda: SmolLM3ForCausalLM(SmolLM3Config(**_small(), pad_token_id=0)),
}
ALL_FAMILIES = {**FAMILIES, **EXTRA}


def perturbed(family: str, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    model = ALL_FAMILIES[family]().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    return LoadedModel(model, tiny_tokenizer(), name=f"tiny-{family}", source="test")


@pytest.fixture(params=sorted(ALL_FAMILIES))
def family_model(request: pytest.FixtureRequest) -> LoadedModel:
    return perturbed(request.param)


__all__ = ["VOCAB", "perturbed"]
