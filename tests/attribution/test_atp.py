"""Attribution patching: the estimate is the first-order term, and it is always checked."""

from dataclasses import replace

import torch

from probewatch.attribution.atp import AtPSpec, attribution_patching
from probewatch.attribution.metrics import LogitDiffMetric
from probewatch.attribution.patching import SweepSpec, patch_sweep, record_sources
from probewatch.tokens import encode
from tests.helpers import perturbed

BASE = ["jello worms", "gfedcbaxyz?"]
DONOR = ["hello world", "abcdefghij!"]


def test_estimate_is_the_derivative_of_exact_patching() -> None:
    """Patching a donor moved ε of the way must change the metric by ε × the AtP estimate."""
    loaded = perturbed("qwen3")
    base, donor = encode(loaded.tokenizer, BASE), encode(loaded.tokenizer, DONOR)
    metric = LogitDiffMetric(5, 9)
    spec = AtPSpec(SweepSpec(positions=(2, -1)), verify_top=5, verify_sample=5)
    result = attribution_patching(loaded, base, donor, metric, spec)
    near = record_sources(loaded, donor)
    own = record_sources(loaded, base)
    eps = 1e-3
    near.acts = {k: own.acts[k] + eps * (near.acts[k] - own.acts[k]) for k in near.acts}
    exact = patch_sweep(loaded, base, near, metric, replace(spec.sweep, only=tuple(result.cells)))
    slope = exact.effect() / eps
    assert torch.allclose(slope, result.estimate, atol=2e-2 * float(result.estimate.abs().max()))


def test_every_result_reports_its_exact_check() -> None:
    loaded = perturbed("gemma3")
    base, donor = encode(loaded.tokenizer, BASE), encode(loaded.tokenizer, DONOR)
    for grad_drop in (False, True):
        spec = AtPSpec(verify_top=6, verify_sample=20, grad_drop=grad_drop)
        result = attribution_patching(loaded, base, donor, LogitDiffMetric(5, 9), spec)
        assert len(result.checked_index) == 26
        assert -1 <= result.pearson <= 1 and 0 <= result.top_recall <= 1
        report = result.to_dict()
        assert report["n_checked"] == 26 and report["checked"][0]["exact"] is not None
        # the top cells were re-checked by exact patching, not by the estimate
        top = result.checked_index[:6]
        assert all(abs(result.estimate[top[0]]) >= abs(result.estimate[i]) for i in top)
    assert result.method.startswith("AtP*")
