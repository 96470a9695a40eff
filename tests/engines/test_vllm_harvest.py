"""`harvest --engine vllm` writes the HF path's store (same rows, same values within
tolerance), and the Ray Data harvest (two model actors on a local Ray cluster) writes the
single-process store. Runs in .venv-vllm; elsewhere it skips, saying why."""

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed: `make test-vllm` builds .venv-vllm")
pytest.importorskip("ray", reason="Ray is not installed: `make test-vllm` builds .venv-vllm")

from probewatch.config import EngineChoice, HarvestSpec
from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.engines.vllm.harvest import harvest_vllm
from probewatch.engines.vllm.ray_harvest import ray_harvest
from probewatch.models import load_model
from probewatch.store import ActivationStore, harvest

pytestmark = pytest.mark.real
SITES = "resid.3,resid.20,final_norm"
TEXTS = [
    "The city of Paris is in France.",
    "The city of Lyon is in Spain.",
    "Rivers carry water from the mountains to the sea.",
    "My favourite colour is a deep shade of blue.",
    "How do I bake a loaf of bread at home?",
    "The quick brown fox jumps over the lazy dog.",
    "Seven is larger than three.",
    "The city of Kyoto is in Japan.",
]


def _dataset() -> Dataset:
    card = DatasetCard("vllm-parity", "parity texts", "tests", "n/a", "by hand", "none")
    examples = [Example(t, float(i % 2), "train" if i < 6 else "test") for i, t in enumerate(TEXTS)]
    return Dataset(card, examples)


def _assert_same(a: ActivationStore, b: ActivationStore, tolerance: float) -> None:
    assert a.sites == b.sites and a.manifest["spec"] == b.manifest["spec"]
    for site in a.sites:
        x, y = a.load(site), b.load(site)
        assert torch.equal(x.example_index, y.example_index)
        assert torch.equal(x.token_index, y.token_index)
        assert torch.equal(x.label, y.label) and torch.equal(x.split, y.split)
        scale = float(x.acts.abs().max())
        assert float((x.acts - y.acts).abs().max()) <= tolerance * max(1.0, scale), site


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root: Path = tmp_path_factory.mktemp("harvest")
    loaded = load_model("default")
    read = HarvestSpec(sites=SITES, positions="all", batch_size=4)
    hf = harvest(loaded, _dataset(), replace(read, out=root / "hf"), progress=False)
    # Eager: prompt-only harvesting gains little from compiling, and the two Ray actors
    # compiling at once took minutes (the compiled path is what test_vllm_serve checks).
    choice = EngineChoice(engine="vllm", vllm_max_model_len=256, vllm_eager=True)
    vllm_spec = replace(read, out=root / "vllm", engine="vllm", vllm_max_model_len=256)
    vllm_spec = replace(vllm_spec, vllm_eager=True)
    one = harvest_vllm(loaded, _dataset(), vllm_spec, progress=False)
    return {"hf": hf, "vllm": one, "root": root, "loaded": loaded, "choice": choice}


def test_vllm_harvest_equals_the_hf_harvest(stores: dict[str, Any]) -> None:
    # Same store format (manifest spec, shards, row keys); values of vLLM's fp32 kernels
    # within 1e-3 of the activations' scale.
    _assert_same(stores["hf"], stores["vllm"], 1e-3)


def test_ray_harvest_equals_the_single_process_harvest(stores: dict[str, Any]) -> None:
    options = {"sites": SITES, "positions": "all", "batch_size": 4, "workers": 2}
    merged = ray_harvest(
        stores["loaded"],
        "default",
        _dataset(),
        stores["root"] / "ray",
        {**options, "choice": stores["choice"]},
    )
    parts = {shard["file"].split("/")[0] for shard in merged.manifest["shards"]}
    assert len(parts) == 2  # each worker wrote its own shards
    _assert_same(stores["vllm"], ActivationStore.open(stores["root"] / "ray"), 1e-4)
