"""Interventions: each leaves the model untouched afterwards, also after errors; weight
orthogonalization equals hook-time ablation; gated steering acts only where the probe fires."""

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import torch

from probewatch.capture import ActivationCapture
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel, load_model
from probewatch.probes.artifact import ProbeArtifact, build_card
from probewatch.probes.base import make_probe
from probewatch.steer import (
    Steering,
    SteeringVector,
    ablate_direction,
    add_vector,
    add_vectors,
    make_intervention,
    orthogonalized,
    probe_gated,
    save_orthogonalized,
)
from probewatch.tokens import encode
from tests.helpers import tiny_model

TEXTS = ["hello there, model", "steering vectors", "a longer sentence about rivers and stones"]


def logits(loaded: LoadedModel) -> torch.Tensor:
    batch = encode(loaded.tokenizer, TEXTS)
    with torch.no_grad():
        out = loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    return out.logits * batch.attention_mask.unsqueeze(-1)


def hook_counts(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def direction(d: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


def vector(loaded: LoadedModel, values: dict[str, torch.Tensor]) -> SteeringVector:
    return SteeringVector(
        values, {"model": loaded.describe(), "sites": list(values), "method": "t"}
    )


def interventions(loaded: LoadedModel) -> dict[str, Callable[[], AbstractContextManager[Any]]]:
    r = direction(loaded.d_model)
    steer = {"resid.1": r, "resid.2": -r}
    return {
        "add": lambda: add_vectors(loaded, steer, 3.0),
        "ablate": lambda: ablate_direction(loaded, r),
        "gated": lambda: probe_gated(
            loaded, gate_probe(loaded, "resid.1"), steer, Steering(3.0, threshold=-1e9)
        ),
    }


def gate_probe(loaded: LoadedModel, site: str) -> ProbeArtifact:
    torch.manual_seed(0)
    x = torch.randn(40, loaded.d_model)
    probe = make_probe("mass_mean").fit(x, (x[:, 0] > 0).float())
    card = build_card(probe, loaded, site, "last", {"name": "gate"}, {})
    return ProbeArtifact(probe, card)


@pytest.mark.parametrize("name", ["add", "ablate", "gated"])
def test_model_untouched_after_block_and_after_error(any_tiny: LoadedModel, name: str) -> None:
    before, hooks = logits(any_tiny), hook_counts(any_tiny.model)
    make = interventions(any_tiny)[name]
    with make():
        inside = logits(any_tiny)
    assert not torch.allclose(inside, before)
    assert hook_counts(any_tiny.model) == hooks
    torch.testing.assert_close(logits(any_tiny), before, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="boom"), make():
        raise RuntimeError("boom")
    assert hook_counts(any_tiny.model) == hooks
    torch.testing.assert_close(logits(any_tiny), before, rtol=0, atol=0)


def test_ablation_removes_the_direction_everywhere(tiny: LoadedModel) -> None:
    r = direction()
    unit = r / r.norm()
    batch = encode(tiny.tokenizer, TEXTS)
    sites = ["embed", "resid.0", "resid.1", "resid.2", "resid.3"]
    with ablate_direction(tiny, r), ActivationCapture(tiny.model, sites, "all") as capture:
        acts = capture.run(batch).acts
    for site in sites:
        assert float((acts[site] @ unit).abs().max()) < 1e-4, site
    with ActivationCapture(tiny.model, sites, "all") as capture:
        plain = capture.run(batch).acts
    assert float((plain["resid.2"] @ unit).abs().max()) > 1e-2


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "gpt2"])
def test_orthogonalized_weights_equal_hook_ablation(family: str) -> None:
    loaded = tiny_model(family)
    r = direction()
    state = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    output = loaded.model.get_output_embeddings()
    tied = output.weight is loaded.model.get_input_embeddings().weight
    with ablate_direction(loaded, r):
        hooked = logits(loaded)
    with orthogonalized(loaded, r):
        baked = logits(loaded)
        assert hook_counts(loaded.model) == 0
    torch.testing.assert_close(baked, hooked, atol=1e-4, rtol=1e-4)
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert (output.weight is loaded.model.get_input_embeddings().weight) == tied
    with pytest.raises(RuntimeError, match="boom"), orthogonalized(loaded, r):
        raise RuntimeError("boom")
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_orthogonalization_refuses_post_norm_families() -> None:
    loaded = tiny_model("gemma3")
    with pytest.raises(ProbewatchError, match="not supported"), orthogonalized(loaded, direction()):
        pass


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_saved_orthogonalized_model_loads_like_any_other(family: str, tmp_path: Path) -> None:
    loaded = tiny_model(family)
    if family == "llama":  # exercise untying of a tied unembedding too
        loaded.model.config.tie_word_embeddings = True
        loaded.model.tie_weights()
    r = direction()
    with ablate_direction(loaded, r):
        hooked = logits(loaded)
    path = save_orthogonalized(loaded, r, tmp_path / "abliterated")
    note = json.loads((path / "probewatch-intervention.json").read_text())
    assert note["intervention"] == "weight_orthogonalization"
    assert note["base_model"]["fingerprint"] == loaded.fingerprint
    reloaded = load_model(str(path))
    torch.testing.assert_close(logits(reloaded), hooked, atol=1e-4, rtol=1e-4)
    assert reloaded.fingerprint != loaded.fingerprint
    with pytest.raises(ProbewatchError, match="already exists"):
        save_orthogonalized(loaded, r, path)


def test_add_vectors_equals_add_vector(tiny: LoadedModel) -> None:
    r = direction()
    with add_vectors(tiny, vector(tiny, {"resid.1": r}), 2.0):
        many = logits(tiny)
    with add_vector(tiny.model, "resid.1", r, 2.0):
        one = logits(tiny)
    torch.testing.assert_close(many, one)


def test_bad_inputs_leave_the_model_untouched(tiny: LoadedModel) -> None:
    before, hooks = logits(tiny), hook_counts(tiny.model)
    r = direction()
    cases: list[Callable[[], AbstractContextManager[Any]]] = [
        lambda: add_vectors(tiny, {"resid.1": r, "resid.2": torch.ones(7)}),
        lambda: add_vectors(tiny, {"resid.1": r, "resid.9": r}),
        lambda: add_vectors(tiny, {"resid.1": r}, float("nan")),
        lambda: add_vectors(tiny, {"resid.1": r.clone().fill_(float("inf"))}),
        lambda: add_vectors(tiny, r),
        lambda: ablate_direction(tiny, torch.zeros(32)),
        lambda: ablate_direction(tiny, torch.ones(16)),
        lambda: orthogonalized(tiny, torch.ones(16)),
        lambda: probe_gated(tiny, gate_probe(tiny, "resid.2"), {"resid.1": r}),
        lambda: probe_gated(
            tiny, gate_probe(tiny, "resid.1"), {"resid.2": r}, Steering(float("inf"))
        ),
    ]
    for make in cases:
        with pytest.raises(ProbewatchError), make():
            pass
        assert hook_counts(tiny.model) == hooks
    narrow = tiny_model(layers=2, d_model=16)
    foreign = vector(narrow, {"resid.1": torch.ones(16)})
    with pytest.raises(ProbewatchError, match="d_model"), add_vectors(tiny, foreign):
        pass
    other = vector(tiny_model("llama", seed=5), {"resid.1": r})
    with pytest.raises(ProbewatchError, match="fingerprint"), add_vectors(tiny, other):
        pass
    with add_vectors(tiny, other, allow_model_mismatch=True):
        pass
    torch.testing.assert_close(logits(tiny), before, rtol=0, atol=0)


def test_gate_acts_only_where_the_probe_fires(tiny: LoadedModel) -> None:
    r = direction()
    probe = gate_probe(tiny, "resid.1")
    before = logits(tiny)
    with add_vectors(tiny, {"resid.1": r}, 3.0):
        always = logits(tiny)
    with probe_gated(tiny, probe, {"resid.1": r}, Steering(3.0, threshold=-1e9)) as stats:
        opened = logits(tiny)
    assert stats.rate == 1.0
    torch.testing.assert_close(opened, always)
    with probe_gated(tiny, probe, {"resid.1": r}, Steering(3.0, threshold=1e9)) as stats:
        closed = logits(tiny)
    assert stats.fired == 0
    torch.testing.assert_close(closed, before)
    # At a middle threshold, exactly the positions whose probe score passes are steered.
    batch = encode(tiny.tokenizer, TEXTS)
    with ActivationCapture(tiny.model, ["resid.1", "resid.2"], "all") as capture:
        plain = capture.run(batch)
    scores = probe.score(plain.acts["resid.1"])
    threshold = float(scores.median())
    with (
        probe_gated(tiny, probe, {"resid.1": r}, Steering(3.0, threshold=threshold)),
        ActivationCapture(tiny.model, ["resid.1"], "all") as capture,
    ):
        steered = capture.run(batch).acts["resid.1"]
    moved = (steered - plain.acts["resid.1"]).norm(dim=1) > 1e-4
    assert torch.equal(moved, scores > threshold)


def test_make_intervention_modes(tiny: LoadedModel) -> None:
    r = direction()
    v = vector(tiny, {"resid.1": r, "resid.2": r})
    before = logits(tiny)
    for mode in ("ablate", "add", "gated", "orthogonalize"):
        gate = gate_probe(tiny, "resid.1")
        how = Steering(2.0, ["resid.1"], threshold=-1e9)
        made = make_intervention(tiny, v, mode, how, probe=gate)
        with made.apply():
            assert not torch.allclose(logits(tiny), before)
        torch.testing.assert_close(logits(tiny), before, rtol=0, atol=0)
        assert made.details["mode"] == mode
    with pytest.raises(ProbewatchError, match="unknown intervention"):
        make_intervention(tiny, v, "teleport")
    with pytest.raises(ProbewatchError, match="needs a probe"):
        make_intervention(tiny, v, "gated")
