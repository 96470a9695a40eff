"""llama.cpp control-vector export: read back with gguf's own reader."""

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader

from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.steer import SteeringVector
from probewatch.steer.export import export_gguf, gguf_layer, site_of_gguf_layer


def _string(reader: GGUFReader, key: str) -> str:
    field = reader.fields[key]
    return bytes(field.parts[field.data[0]]).decode()


def _int(reader: GGUFReader, key: str) -> int:
    field = reader.fields[key]
    return int(field.parts[field.data[0]][0])


def test_round_trip_names_layers_and_values(tiny: LoadedModel, tmp_path: Path) -> None:
    values = {
        f"resid.{i}": torch.randn(32, generator=torch.Generator().manual_seed(i)) for i in (1, 2, 3)
    }
    vector = SteeringVector(values, {"model": tiny.describe(), "sites": list(values)})
    path = export_gguf(vector, tmp_path / "refusal.gguf", scale=2.0)
    reader = GGUFReader(str(path))
    assert _string(reader, "general.architecture") == "controlvector"
    assert _string(reader, "controlvector.model_hint") == "llama"
    assert _int(reader, "controlvector.layer_count") == 3
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert sorted(tensors) == ["direction.1", "direction.2", "direction.3"]
    for name, data in tensors.items():
        layer = int(name.split(".")[1])
        assert data.dtype == np.float32 and data.shape == (32,)
        # llama.cpp adds direction.N to the output of block N: probewatch's resid.N.
        np.testing.assert_allclose(data, 2.0 * values[site_of_gguf_layer(layer)].numpy(), rtol=1e-6)


def test_unexportable_sites_are_refused(tiny: LoadedModel, tmp_path: Path) -> None:
    assert gguf_layer("resid.7") == 7 and site_of_gguf_layer(7) == "resid.7"
    for site, match in (("resid.0", "block 0"), ("attn_out.2", "no llama.cpp"), ("embed", "no")):
        vector = SteeringVector({site: torch.ones(32)}, {"model": tiny.describe()})
        with pytest.raises(ProbewatchError, match=match):
            export_gguf(vector, tmp_path / "x.gguf")
    good = SteeringVector({"resid.1": torch.ones(32)}, {"model": tiny.describe()})
    with pytest.raises(ProbewatchError, match="finite"):
        export_gguf(good, tmp_path / "y.gguf", scale=float("inf"))
    assert not (tmp_path / "x.gguf").exists()
