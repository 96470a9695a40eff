"""One probe per binary dataset family, on the default model: the held-out AUROC of each.

Statement datasets are probed at the statement's last token; chat datasets whose last turn
is the model's answer (deception, hallucination, sandbagging) at the answer's tokens, mean
aggregated; prompt datasets (harm, eval awareness) at the last prompt token.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from probewatch.data import load_dataset
from probewatch.data.base import Dataset
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.pipeline import train_probe

BINARY_FAMILIES: tuple[str, ...] = (
    "cities",
    "capitals",
    "sp_en_trans",
    "larger_than",
    "harmful_vs_harmless",
    "eval_awareness",
    "deception_instructed",
    "deception_roleplay",
    "knowledge_qa",
    "sandbagging",
)


@dataclass
class FamilyResult:
    dataset: str
    n_train: int
    n_test: int
    positions: str
    site: str
    auroc: float
    ci_low: float
    ci_high: float
    recall_at_1pct_fpr: float
    note: str = ""


def positions_for(dataset: Dataset) -> str:
    """Answer tokens for chats that end with the model's answer, else the last token."""
    chats = [ex.messages for ex in dataset.examples if ex.messages]
    if chats and all(m[-1].get("role") == "assistant" for m in chats):
        return "mask"
    return "last"


def evaluate_families(
    loaded: LoadedModel,
    names: Sequence[str] = BINARY_FAMILIES,
    sites: str = "resid.10,resid.15,resid.19,resid.24",
    limit: int | None = None,
    progress: bool = True,
) -> list[FamilyResult]:
    results = []
    for name in names:
        dataset: Dataset | None = None
        positions = "last"
        try:
            # Building a generated set can itself fail, e.g. when the model never sandbagged.
            dataset = load_dataset(name, model=loaded, limit=limit)
            positions = positions_for(dataset)
            result = train_probe(loaded, dataset, sites, positions=positions, progress=progress)
        except ProbewatchError as exc:
            n_train = len(dataset.split("train")) if dataset else 0
            n_test = len(dataset.split("test")) if dataset else 0
            nan = float("nan")
            results.append(
                FamilyResult(
                    name, n_train, n_test, positions, "-", nan, nan, nan, nan, note=exc.message
                )
            )
            continue
        test = result.metrics.test
        results.append(
            FamilyResult(
                name,
                len(dataset.split("train")),
                len(dataset.split("test")),
                positions,
                result.best_site,
                test.auroc,
                test.auroc_ci_low,
                test.auroc_ci_high,
                result.metrics.recall_at_fpr,
            )
        )
    return results


def as_rows(results: Sequence[FamilyResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
