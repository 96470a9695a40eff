"""Labelled datasets: built-in builders by name, and the user's own files."""

from collections.abc import Callable
from pathlib import Path

from probewatch.data.base import Dataset, DatasetCard, Example, require_binary
from probewatch.data.cities import build_cities
from probewatch.data.eval_awareness import build_eval_awareness
from probewatch.data.files import SUFFIXES, Task, load_file
from probewatch.data.harm import build_benign_control, build_harmful_vs_harmless
from probewatch.data.truth import build_capitals, build_comparisons, build_translations
from probewatch.errors import ProbewatchError

Builder = Callable[[int], Dataset]

BUILDERS: dict[str, Builder] = {
    "cities": lambda seed: build_cities("affirmative", seed),
    "neg_cities": lambda seed: build_cities("negated", seed),
    "capitals": lambda seed: build_capitals("affirmative", seed),
    "neg_capitals": lambda seed: build_capitals("negated", seed),
    "sp_en_trans": lambda seed: build_translations("affirmative", seed),
    "neg_sp_en_trans": lambda seed: build_translations("negated", seed),
    "larger_than": lambda seed: build_comparisons("larger", "affirmative", seed),
    "neg_larger_than": lambda seed: build_comparisons("larger", "negated", seed),
    "smaller_than": lambda seed: build_comparisons("smaller", "affirmative", seed),
    "neg_smaller_than": lambda seed: build_comparisons("smaller", "negated", seed),
    "harmful_vs_harmless": build_harmful_vs_harmless,
    "benign_control": build_benign_control,
    "eval_awareness": build_eval_awareness,
}


# Families whose members are compared against each other (the generalization matrix).
FAMILIES: dict[str, list[str]] = {
    "truth": [
        "cities",
        "neg_cities",
        "capitals",
        "neg_capitals",
        "sp_en_trans",
        "neg_sp_en_trans",
        "larger_than",
        "smaller_than",
    ],
}


def dataset_names() -> list[str]:
    return sorted(BUILDERS)


def load_dataset(
    name: str,
    seed: int = 0,
    text_column: str = "text",
    label_column: str = "label",
    task: Task = "auto",
) -> Dataset:
    """A built-in dataset by name, or a user's CSV/TSV/JSONL/Parquet file by path."""
    if name in BUILDERS:
        return BUILDERS[name](seed)
    if Path(name).suffix.lower() in SUFFIXES:
        return load_file(name, text_column, label_column, task=task)
    raise ProbewatchError(
        f"unknown dataset {name!r}",
        hint=f"built-in datasets: {', '.join(dataset_names())}; or a "
        f"{'/'.join(SUFFIXES)} file path",
    )


__all__ = [
    "BUILDERS",
    "FAMILIES",
    "Dataset",
    "DatasetCard",
    "Example",
    "dataset_names",
    "load_dataset",
    "load_file",
    "require_binary",
]
