"""Probe kinds behind one small interface, and the safe on-disk artifact."""

from probewatch.probes.artifact import ProbeArtifact, load_probe, save_probe
from probewatch.probes.base import PROBE_KINDS, Probe, make_probe
from probewatch.probes.linear import LogisticProbe

__all__ = [
    "PROBE_KINDS",
    "LogisticProbe",
    "Probe",
    "ProbeArtifact",
    "load_probe",
    "make_probe",
    "save_probe",
]
