"""Real-model tests on Qwen2.5-Coder-0.5B-Instruct, the second embedded chat model (assembled
from six packages, sha256-checked, converted once). A cold CI run converts it first (~1-4 min
on 2 shared cores); the tests themselves take about a minute."""

from collections.abc import Iterator

import pytest
import torch

from probewatch.capture import ActivationCapture
from probewatch.models import load_model
from probewatch.models.loading import LoadedModel, converted_cache_path
from probewatch.models.registry import QWEN25_05B, find_embedded
from probewatch.monitor import Monitor
from probewatch.probes import ProbeArtifact, make_probe
from probewatch.probes.artifact import build_card
from probewatch.steer.interventions import add_vectors
from probewatch.tokens import encode, encode_chats

pytestmark = pytest.mark.real
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def qwen() -> Iterator[LoadedModel]:
    if not QWEN25_05B.installed():
        pytest.skip(f"Qwen packages not installed: {QWEN25_05B.install}")
    yield load_model("qwen2.5-0.5b")


def test_qwen_is_assembled_converted_once_and_answers(qwen: LoadedModel) -> None:
    assert find_embedded("qwen") is QWEN25_05B and qwen.name == QWEN25_05B.name
    assert type(qwen.model).__name__ == "Qwen2ForCausalLM"
    assert qwen.n_layers == 24 and qwen.d_model == 896
    assert (converted_cache_path(QWEN25_05B) / "probewatch-model.json").is_file()
    assert load_model("qwen").fingerprint == qwen.fingerprint  # from the cache, stable
    monitor = Monitor(qwen, [])
    (response,) = monitor.generate([CHAT], max_new_tokens=8)
    assert "Paris" in response.text


def test_capture_matches_hidden_states_on_qwen(qwen: LoadedModel) -> None:
    batch = encode(qwen.tokenizer, ["The city of Lyon is in France.", "Hi"])
    with torch.no_grad():
        hidden = qwen.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=True,
        ).hidden_states
    with ActivationCapture(qwen.model, "embed,resid.0,resid.12,resid.22", "all") as cap:
        captured = cap.run(batch)
    rows, cols = captured.example_index, captured.token_index
    torch.testing.assert_close(captured.acts["embed"], hidden[0][rows, cols])
    for i in (0, 12, 22):
        torch.testing.assert_close(captured.acts[f"resid.{i}"], hidden[i + 1][rows, cols])


def test_response_mask_on_the_qwen_chat_template(qwen: LoadedModel) -> None:
    chat = [*CHAT, {"role": "assistant", "content": "Paris."}]
    batch = encode_chats(qwen.tokenizer, [chat])
    assert batch.token_mask is not None
    assert qwen.tokenizer.decode(batch.input_ids[0][batch.token_mask[0]]).strip() == "Paris."


def test_monitor_and_steering_on_qwen(qwen: LoadedModel) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, qwen.d_model, generator=gen)
    probe = make_probe("logistic").fit(x, (x[:, 0] > 0).float())
    card = build_card(probe, qwen, "resid.12", "last", {"name": "toy", "hash": "x"}, {})
    monitor = Monitor(qwen, [ProbeArtifact(probe, card)])
    (plain,) = monitor.generate([CHAT], max_new_tokens=4)
    ids = qwen.tokenizer.apply_chat_template(
        CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    reference = qwen.model.generate(**ids, max_new_tokens=4, do_sample=False)
    new = reference[0, ids["input_ids"].shape[1] :].tolist()
    assert [s.token_id for s in plain.tokens] == new[: len(plain.tokens)]
    assert all(0.0 <= s.scores["toy"] <= 1.0 for s in plain.tokens)
    # A large push along one direction changes the greedy answer; leaving the block removes
    # the hook (the same logits as before).
    push = torch.zeros(qwen.d_model)
    push[int(torch.argmax(x.std(0)))] = 1.0
    prompt = {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]}
    with torch.no_grad():
        before = qwen.model(**prompt).logits[0, -1]
        with add_vectors(qwen, push, scale=200.0, sites=["resid.6"]):
            steered = qwen.model(**prompt).logits[0, -1]
        after = qwen.model(**prompt).logits[0, -1]
    assert int(steered.argmax()) != int(before.argmax())
    torch.testing.assert_close(after, before)
