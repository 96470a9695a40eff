"""Shared fixtures: tiny random models of several families (no download) and the real default."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

from probewatch.models.loading import LoadedModel

VOCAB = 300  # 256 byte tokens + specials, so any text tokenizes
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with no merges: offline, fast, with offsets and a chat template."""
    byte_vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    specials = ["<pad>", "<bos>", "<eos>"]
    for name in specials:
        byte_vocab[name] = len(byte_vocab)
    core = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer


def _small(**extra: int) -> dict[str, int]:
    return {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        **extra,
    }


FAMILIES: dict[str, Callable[[], PreTrainedModel]] = {
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**_small())),
    "mistral": lambda: MistralForCausalLM(MistralConfig(**_small())),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**_small())),
    "qwen3": lambda: Qwen3ForCausalLM(Qwen3Config(**_small(head_dim=8))),
    "gemma3": lambda: Gemma3ForCausalLM(Gemma3TextConfig(**_small(head_dim=8))),
    "gpt2": lambda: GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=4, n_head=4, bos_token_id=0, eos_token_id=0)
    ),
}


def tiny_model(family: str = "llama", seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    model = FAMILIES[family]().eval()
    return LoadedModel(model, tiny_tokenizer(), name=f"tiny-{family}", source="test")


@pytest.fixture(params=sorted(FAMILIES))
def any_tiny(request: pytest.FixtureRequest) -> LoadedModel:
    return tiny_model(request.param)


@pytest.fixture
def tiny() -> LoadedModel:
    return tiny_model("llama")


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[None]:
    """Unit tests get a private cache; real-model tests share the user's (conversion is slow)."""
    if request.node.get_closest_marker("real") is None:
        monkeypatch.setenv("PROBEWATCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield


@pytest.fixture(scope="session")
def default_model() -> LoadedModel:
    from probewatch.models import load_model

    return load_model("default")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
