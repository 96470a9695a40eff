"""Probe kinds behind one small interface, and the safe on-disk artifact."""

from probewatch.probes.artifact import ProbeArtifact, load_probe, save_probe
from probewatch.probes.attention import AttentionProbe, pad_sequences
from probewatch.probes.base import PROBE_KINDS, Probe, make_probe
from probewatch.probes.linear import LogisticProbe
from probewatch.probes.massmean import MassMeanProbe
from probewatch.probes.mlp import MLPProbe
from probewatch.probes.pca import PCADiffProbe
from probewatch.probes.ridge import RidgeProbe

__all__ = [
    "PROBE_KINDS",
    "AttentionProbe",
    "LogisticProbe",
    "MLPProbe",
    "MassMeanProbe",
    "PCADiffProbe",
    "Probe",
    "ProbeArtifact",
    "RidgeProbe",
    "load_probe",
    "make_probe",
    "pad_sequences",
    "save_probe",
]
