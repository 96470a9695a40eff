"""A probe's affine form is the one it declares; a probe that is not affine is refused."""

import pytest
import torch

from probewatch.attribution.targets import affine_form
from probewatch.errors import ProbewatchError
from probewatch.probes import make_probe

X = torch.randn(60, 8, generator=torch.Generator().manual_seed(0))
Y = (X[:, 0] > 0).float()


@pytest.mark.parametrize("kind", ["logistic", "mass_mean", "pca_diff"])
def test_the_form_is_the_probes_own_and_reproduces_its_score(kind: str) -> None:
    probe = make_probe(kind).fit(X, Y)
    weight, bias = affine_form(probe)
    declared = probe.affine()
    assert declared is not None
    declared_weight, declared_bias = declared
    assert torch.equal(weight, declared_weight.reshape(-1).double())
    assert torch.equal(bias, torch.as_tensor(declared_bias).reshape(()).double())
    own = probe.score(X).reshape(-1).double()
    assert torch.allclose(X.double() @ weight + bias, own, atol=1e-4)


def test_a_probe_that_is_not_affine_is_refused_with_a_hint() -> None:
    probe = make_probe("mlp", max_epochs=2).fit(X, Y)
    with pytest.raises(ProbewatchError, match="attribution needs a linear probe") as refused:
        affine_form(probe)
    assert "'mlp' probe is not affine" in refused.value.message
    assert "activation patching" in (refused.value.hint or "")
