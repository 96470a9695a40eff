"""Labelled datasets: built-in builders by name, and the user's own files."""

from collections.abc import Callable
from pathlib import Path

from probewatch.data.base import Dataset, DatasetCard, Example, require_binary
from probewatch.data.cities import build_cities
from probewatch.data.files import load_file
from probewatch.errors import ProbewatchError

Builder = Callable[[int], Dataset]

BUILDERS: dict[str, Builder] = {
    "cities": lambda seed: build_cities("affirmative", seed),
    "neg_cities": lambda seed: build_cities("negated", seed),
}


def dataset_names() -> list[str]:
    return sorted(BUILDERS)


def load_dataset(
    name: str, seed: int = 0, text_column: str = "text", label_column: str = "label"
) -> Dataset:
    """A built-in dataset by name, or a user's CSV/JSONL file by path."""
    if name in BUILDERS:
        return BUILDERS[name](seed)
    if Path(name).suffix.lower() in (".csv", ".tsv", ".jsonl", ".ndjson"):
        return load_file(name, text_column, label_column)
    raise ProbewatchError(
        f"unknown dataset {name!r}",
        hint=f"built-in datasets: {', '.join(dataset_names())}; or a .csv/.jsonl file path",
    )


__all__ = [
    "BUILDERS",
    "Dataset",
    "DatasetCard",
    "Example",
    "dataset_names",
    "load_dataset",
    "load_file",
    "require_binary",
]
