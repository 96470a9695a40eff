"""The two sides a spec names: model A, and model B or A under an intervention."""

from probewatch.compare.forward import Side
from probewatch.compare.spec import CompareSpec
from probewatch.models.loading import LoadedModel, load_model
from probewatch.steer.directions import load_vector
from probewatch.steer.interventions import Steering, make_intervention


def load_sides(spec: CompareSpec, a: LoadedModel | None = None) -> tuple[Side, Side]:
    """Side A (`spec.model`) and side B: `spec.b` loaded, or A itself under `spec.steer`."""
    loaded = a or load_model(spec.model, device=spec.device)
    side_a = Side(loaded, "A")
    if spec.steer is None:
        assert spec.b is not None
        return side_a, Side(load_model(spec.b, device=spec.device), "B")
    vector = load_vector(spec.steer, loaded)
    sites = [s.strip() for s in (spec.steer_sites or "").split(",") if s.strip()] or None
    intervention = make_intervention(
        loaded, vector, spec.steer_mode, Steering(spec.steer_scale, sites)
    )
    other = load_model(spec.b, device=spec.device) if spec.b else loaded
    return side_a, Side(other, "B", intervention)
