"""Interventions on the residual stream: directions, steering, ablation, audits and exports."""

from probewatch.hooks import add_vector
from probewatch.steer.directions import (
    SteeringVector,
    extract_directions,
    from_probe,
    load_vector,
    save_vector,
)
from probewatch.steer.interventions import (
    Intervention,
    Steering,
    ablate_direction,
    add_vectors,
    make_intervention,
    probe_gated,
)
from probewatch.steer.orthogonalize import orthogonalized, save_orthogonalized

__all__ = [
    "Intervention",
    "Steering",
    "SteeringVector",
    "ablate_direction",
    "add_vector",
    "add_vectors",
    "extract_directions",
    "from_probe",
    "load_vector",
    "make_intervention",
    "orthogonalized",
    "probe_gated",
    "save_orthogonalized",
    "save_vector",
]
