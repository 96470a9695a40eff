"""compare's cross-model patching: the batched attribution sweep gives each site the same
metric as replacing that site's output with B's in one forward of A per site."""

import numpy as np
import pytest
import torch

from probewatch.compare import patching
from probewatch.compare.forward import Side
from probewatch.compare.passes import padded
from probewatch.sites import expand_sites
from probewatch.steer.interventions import Intervention, add_vectors
from tests.helpers import perturbed


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_the_sweep_equals_one_forward_per_site(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = perturbed(family)
    vector = torch.randn(loaded.d_model, generator=torch.Generator().manual_seed(0))
    steer = Intervention("steer", lambda: add_vectors(loaded, {"resid.1": vector}, 3.0))
    a, b = Side(loaded, "A"), Side(loaded, "B", steer)
    tok = loaded.tokenizer
    batch = padded([tok("say hello")["input_ids"], tok("a longer prompt here")["input_ids"]], 0)
    sites = expand_sites("resid.*,attn_out.*,mlp_out.*", loaded.n_layers)
    ya, yb = torch.tensor([3, 4]), torch.tensor([5, 6])
    swept = patching._patched_metrics(a, b, batch, sites, ya, yb)
    assert all(patching._sweep_cell(a, site, 4) is not None for site in sites)  # all swept
    monkeypatch.setattr(patching, "_sweep_cell", lambda *_: None)
    looped = patching._patched_metrics(a, b, batch, sites, ya, yb)
    moved = [s.name for s in sites if not np.allclose(swept[s.name], swept[sites[0].name])]
    assert moved  # the steering does change what later sites carry
    for site in sites:
        np.testing.assert_allclose(
            swept[site.name], looped[site.name], atol=1e-4, err_msg=site.name
        )
