"""Real-model tests on the embedded default (SmolLM2-135M-Instruct). They prove the system works
on a real model, not only on random ones, and run in CI (the first run converts the GGUF, ~20 s)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from probewatch.capture import ActivationCapture
from probewatch.cli import main
from probewatch.config import EvalOptions, ProbeSpec
from probewatch.data import load_dataset
from probewatch.models import load_model
from probewatch.models.loading import LoadedModel
from probewatch.probes import load_probe, save_probe
from probewatch.tokens import encode, encode_chats
from probewatch.training import BinaryScores, RegressionScores, train
from probewatch.training.evaluate import evaluate

pytestmark = pytest.mark.real


def test_default_model_is_smollm2_with_its_chat_template(default_model: LoadedModel) -> None:
    assert default_model.name == "smollm2-135m-instruct"
    assert default_model.n_layers == 30 and default_model.d_model == 576
    assert default_model.tokenizer.chat_template
    assert load_model("default").fingerprint == default_model.fingerprint  # cached, stable
    ids = default_model.tokenizer("The capital of France is", return_tensors="pt")
    out = default_model.model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in default_model.tokenizer.decode(out[0])


def test_capture_matches_hidden_states_on_the_real_model(default_model: LoadedModel) -> None:
    batch = encode(default_model.tokenizer, ["The city of Lyon is in France.", "Hello there"])
    with torch.no_grad():
        hidden = default_model.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=True,
        ).hidden_states
    with ActivationCapture(
        default_model.model, "resid.0,resid.14,resid.28,final_norm", "all"
    ) as cap:
        captured = cap.run(batch)
    rows, cols = captured.example_index, captured.token_index
    for i in (0, 14, 28):
        torch.testing.assert_close(captured.acts[f"resid.{i}"], hidden[i + 1][rows, cols])
    torch.testing.assert_close(captured.acts["final_norm"], hidden[30][rows, cols])


def test_response_mask_on_the_real_chat_template(default_model: LoadedModel) -> None:
    chat = [
        {"role": "user", "content": "Where is Lyon?"},
        {"role": "assistant", "content": "In France."},
    ]
    batch = encode_chats(default_model.tokenizer, [chat])
    assert batch.token_mask is not None
    picked = default_model.tokenizer.decode(batch.input_ids[0][batch.token_mask[0]])
    assert picked.strip() == "In France."


def test_truth_probe_on_cities_reaches_the_target_and_round_trips(
    default_model: LoadedModel, tmp_path: Path
) -> None:
    dataset = load_dataset("cities")
    # A band of middle layers keeps CI fast; `make demo` sweeps all 30.
    spec = ProbeSpec(sites="resid.10-14", n_boot=500)
    result = train(default_model, dataset, spec, progress=False)
    metrics = result.metrics
    assert isinstance(metrics, BinaryScores)
    assert result.best_site in {f"resid.{i}" for i in range(10, 15)}
    assert metrics.test.auroc >= 0.85
    assert metrics.test.auroc_ci_low > 0.8
    card = result.artifact.card
    assert card["threshold"]["target_fpr"] == 0.01 and "validation" in card["threshold"]["set_on"]
    assert 0 < metrics.recall_at_fpr <= 1
    save_probe(result.artifact, tmp_path / "probe")
    back = load_probe(tmp_path / "probe", model=default_model)
    again = evaluate(back, default_model, dataset, EvalOptions(n_boot=500), progress=False)
    assert again.metrics.auroc == pytest.approx(metrics.test.auroc, abs=1e-6)

    data = tmp_path / "mine.jsonl"
    rows = [
        {"statement": "The city of Paris is in France.", "is_true": True},
        {"statement": "The city of Paris is in Japan.", "is_true": False},
        {"statement": "The city of Tokyo is in Japan.", "is_true": True},
        {"statement": "The city of Tokyo is in Brazil.", "is_true": False},
        {"statement": "The city of Cairo is in Egypt.", "is_true": True},
        {"statement": "The city of Cairo is in Canada.", "is_true": False},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(
        [
            "eval",
            str(tmp_path / "probe"),
            "--file",
            str(data),
            "--text-column",
            "statement",
            "--label-column",
            "is_true",
            "--json",
            "--quiet",
        ]
    )
    assert code == 0


def test_thinking_progress_probe_on_the_models_own_answers(default_model: LoadedModel) -> None:
    """The regression probe reads how far through its answer SmolLM2 is, and in live generation
    its estimate rises with the tokens. On answers of 1 to 10 sentences (120 topics, 97
    finished), with alpha cross-validated over whole answers, SmolLM2's probe beats the
    position-only baseline in its card (measured at resid.19 of a wider sweep: R² 0.576
    [0.463, 0.687] vs 0.441, 16 held-out answers); the test holds the probe to predicting
    progress at all, and the card to reporting the baseline."""
    from probewatch.monitor import Monitor

    dataset = load_dataset("thinking_progress", model=default_model)
    assert len(dataset.examples) >= 30  # most short answers finish within the token limit
    spec = ProbeSpec(sites="resid.15,resid.19", positions="mask")
    result = train(default_model, dataset, spec, progress=False)
    metrics = result.metrics
    assert isinstance(metrics, RegressionScores)
    assert metrics.r2_ci_low > 0.0 and metrics.baseline_r2 is not None
    artifact = result.artifact
    chat = [{"role": "user", "content": "In two or three sentences, explain how tides work."}]
    (response,) = Monitor(default_model, [artifact]).generate([chat], max_new_tokens=60)
    estimates = [t.progress for t in response.tokens]
    assert len(estimates) >= 20 and all(e is not None for e in estimates)
    ranks = np.argsort(np.argsort(np.array(estimates, dtype=float)))
    rho = float(np.corrcoef(np.arange(len(ranks)), ranks)[0, 1])  # Spearman, no ties expected
    assert rho > 0.5, (rho, estimates)
