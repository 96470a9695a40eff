"""The shortcut audit: is a probe right for the concept, or for a surface feature of the data?

Three checks, each reported in the training report and the probe card:
- **early layers**: the test AUROC of the same kind of probe at the embedding and the first two
  blocks. A concept the model has to compute should be near chance there; a high value names a
  surface confound (a template word, the form of the request).
- **surface baseline**: a bag-of-words (unigrams and bigrams) + length logistic regression
  trained on the same train split, over all the text the probed position can see (every
  turn of the conversation), scored on the same test split.
- **format-matched control**: the probe's AUROC on a set where the surface form varies but the
  concept does not (e.g. deployment requests with and without benchmark formatting); it
  should be near chance, whichever way it leans.

The verdict is "likely shortcut" when the surface baseline comes within `MARGIN` of the probe,
or the control is far from chance. Early layers above `EARLY_WARNING` are named as a warning.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from probewatch.metrics.scores import auroc

MARGIN = 0.05  # baseline AUROC >= probe AUROC - MARGIN: the words alone do (nearly) as well
CONTROL_TOLERANCE = 0.15  # a control AUROC outside 0.5 +- this reads the format
EARLY_WARNING = 0.80  # an embedding/early-layer AUROC above this names a surface confound
EARLY_SITES = ("embed", "resid.0", "resid.1")
Verdict = Literal["likely shortcut", "passes"]


def _length_features(texts: Sequence[str]) -> np.ndarray:
    chars = np.array([len(t) for t in texts], dtype=np.float64)
    words = np.array([len(t.split()) for t in texts], dtype=np.float64)
    return np.log1p(np.stack([chars, words], axis=1))


def surface_baseline_auroc(
    train_text: Sequence[str],
    train_labels: Sequence[float],
    test_text: Sequence[str],
    test_labels: Sequence[float],
) -> float:
    """Test AUROC of bag-of-words + length logistic regression fitted on the train texts."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    y_train = np.asarray(train_labels, dtype=np.float64) > 0.5
    y_test = np.asarray(test_labels, dtype=np.float64) > 0.5
    vectorizer = CountVectorizer(ngram_range=(1, 2), min_df=2, binary=True, lowercase=True)
    try:
        words_train = vectorizer.fit_transform(train_text)
    except ValueError:  # no word occurs twice: lengths alone
        words_train = csr_matrix((len(train_text), 0))
        vectorizer = None
    words_test = vectorizer.transform(test_text) if vectorizer else csr_matrix((len(test_text), 0))
    scaler = StandardScaler().fit(_length_features(train_text))
    x_train = hstack([words_train, csr_matrix(scaler.transform(_length_features(train_text)))])
    x_test = hstack([words_test, csr_matrix(scaler.transform(_length_features(test_text)))])
    model = LogisticRegression(C=1.0, max_iter=2000).fit(x_train.tocsr(), y_train)
    return auroc(model.decision_function(x_test.tocsr()), y_test)


@dataclass
class ShortcutAudit:
    """The audit's numbers and what they say; stored in the card as `shortcut_audit`."""

    probe_auroc: float
    baseline_auroc: float
    early_layers: Mapping[str, float] = field(default_factory=dict)
    control_auroc: float | None = None
    control: str | None = None

    @property
    def reasons(self) -> list[str]:
        found = []
        if self.baseline_auroc >= self.probe_auroc - MARGIN:
            found.append(
                f"bag-of-words/length baseline AUROC {self.baseline_auroc:.3f} is within "
                f"{MARGIN} of the probe's {self.probe_auroc:.3f}"
            )
        if self.control_auroc is not None and abs(self.control_auroc - 0.5) > CONTROL_TOLERANCE:
            found.append(
                f"format-matched control {self.control} AUROC {self.control_auroc:.3f} is "
                f"outside 0.5 +- {CONTROL_TOLERANCE}: the probe reads the surface feature "
                "that set varies"
            )
        return found

    @property
    def warnings(self) -> list[str]:
        return [
            f"{site} already separates the classes (AUROC {value:.3f}): a surface confound"
            for site, value in self.early_layers.items()
            if value > EARLY_WARNING
        ]

    @property
    def verdict(self) -> Verdict:
        return "likely shortcut" if self.reasons else "passes"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "probe_auroc": self.probe_auroc,
            "baseline_auroc": self.baseline_auroc,
            "baseline": "bag-of-words (1-2 grams) + length logistic regression, same split",
            "early_layers": dict(self.early_layers),
            "control": self.control,
            "control_auroc": self.control_auroc,
            "rule": (
                f"likely shortcut when baseline >= probe - {MARGIN}, or the control AUROC is "
                f"outside 0.5 +- {CONTROL_TOLERANCE}; early layers above {EARLY_WARNING} warn"
            ),
            "reasons": self.reasons,
            "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ShortcutAudit":
        return cls(
            probe_auroc=float(data["probe_auroc"]),
            baseline_auroc=float(data["baseline_auroc"]),
            early_layers={k: float(v) for k, v in dict(data.get("early_layers", {})).items()},
            control_auroc=None if data.get("control_auroc") is None else data["control_auroc"],
            control=data.get("control"),
        )

    def line(self) -> str:
        early = ", ".join(f"{k} {v:.2f}" for k, v in self.early_layers.items())
        control = "" if self.control_auroc is None else f", control {self.control_auroc:.2f}"
        return (
            f"shortcut audit: {self.verdict} (probe {self.probe_auroc:.3f}, words/length "
            f"baseline {self.baseline_auroc:.3f}, early layers [{early}]{control})"
        )


def serving_refusal(card: Mapping[str, Any], name: str, force: bool = False) -> str | None:
    """Why a probe must not be served (its card's audit says "likely shortcut"), or None.

    A suite or server calls this before serving; `force` serves it anyway (the caller should
    say so). Cards without an audit predate it and are served."""
    audit = card.get("shortcut_audit")
    if force or not isinstance(audit, Mapping) or audit.get("verdict") != "likely shortcut":
        return None
    reasons = "; ".join(str(r) for r in audit.get("reasons", [])) or "see its card"
    return (
        f"probe {name!r} is likely a shortcut ({reasons}); serve it anyway with --serve-shortcuts"
    )
