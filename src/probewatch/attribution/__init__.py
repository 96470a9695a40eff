"""Why did it say that: attribution on the model as loaded (no folding, no copy, SDPA kept).

Direct logit attribution (`direct_attribution`) of a logit difference, a log-probability or a
probe's score to the embedding, every head, every MLP (and neurons).
"""

from probewatch.attribution.anatomy import Anatomy, anatomy
from probewatch.attribution.dla import Attribution, direct_attribution
from probewatch.attribution.targets import LogitDiff, LogProb, ProbeScore, single_token

__all__ = [
    "Anatomy",
    "Attribution",
    "LogProb",
    "LogitDiff",
    "ProbeScore",
    "anatomy",
    "direct_attribution",
    "single_token",
]
