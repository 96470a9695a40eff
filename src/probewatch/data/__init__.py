"""Labelled datasets: built-in builders by name, and the user's own files."""

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from probewatch.config import DataSource, FileColumns
from probewatch.data.base import Dataset, DatasetCard, Example, require_binary
from probewatch.data.cities import build_cities
from probewatch.data.common import stable_hash
from probewatch.data.deception_pairs import build_deception_instructed
from probewatch.data.eval_awareness import build_eval_awareness, build_eval_awareness_control
from probewatch.data.files import SUFFIXES, load_file
from probewatch.data.harm import (
    build_benign_control,
    build_harm_vocabulary_control,
    build_harmful_vs_harmless,
)
from probewatch.data.truth import (
    Form,
    Relation,
    build_capitals,
    build_comparisons,
    build_translations,
)
from probewatch.errors import ProbewatchError

if TYPE_CHECKING:
    from probewatch.models.loading import LoadedModel

Builder = Callable[[int], Dataset]


@dataclass(frozen=True)
class DatasetEntry:
    """One built-in dataset: how it is built and what the rest of probewatch uses it for."""

    build: Builder | None = None  # None: labelled from a model's answers (data.generated)
    family: str | None = None  # the generalization family it belongs to (e.g. "truth")
    control: str | None = None  # its format-matched control (the shortcut audit)
    benign_control: str | None = None  # the separate benign set its threshold is set on
    in_families: bool = False  # a row of `probewatch families`
    transfer: str | None = None  # families also scores its probe on this set's test split
    # Built on an organism whose labels follow what its base knows: families trains the same
    # probe on the base's activations too (a probe as good there reads familiarity).
    familiarity_control: bool = False


def _truth(build: Callable[[Form, int], Dataset], form: Form, family: bool = True) -> DatasetEntry:
    # `probewatch families` takes the affirmative form of each truth set (larger_than stands
    # for both comparisons); the generalization family takes both forms.
    return DatasetEntry(
        lambda seed: build(form, seed),
        family="truth" if family else None,
        in_families=family and form == "affirmative",
    )


def _comparison(kind: Relation, form: Form, family: bool = True) -> DatasetEntry:
    entry = _truth(lambda f, seed: build_comparisons(kind, f, seed), form, family)
    return replace(entry, in_families=entry.in_families and kind == "larger")


# The one table of built-in datasets (generated ones are built by data.generated, named here
# so that listing them does not import the model stack).
DATASETS: dict[str, DatasetEntry] = {
    "cities": _truth(build_cities, "affirmative"),
    "neg_cities": _truth(build_cities, "negated"),
    "capitals": _truth(build_capitals, "affirmative"),
    "neg_capitals": _truth(build_capitals, "negated"),
    "sp_en_trans": _truth(build_translations, "affirmative"),
    "neg_sp_en_trans": _truth(build_translations, "negated"),
    "larger_than": _comparison("larger", "affirmative"),
    "neg_larger_than": _comparison("larger", "negated", family=False),
    "smaller_than": _comparison("smaller", "affirmative"),
    "neg_smaller_than": _comparison("smaller", "negated", family=False),
    "harmful_vs_harmless": DatasetEntry(
        build_harmful_vs_harmless,
        control="harm_vocabulary_control",
        benign_control="benign_control",
        in_families=True,
    ),
    "benign_control": DatasetEntry(build_benign_control),
    "harm_vocabulary_control": DatasetEntry(build_harm_vocabulary_control),
    "eval_awareness": DatasetEntry(
        build_eval_awareness, control="eval_awareness_control", in_families=True
    ),
    "eval_awareness_control": DatasetEntry(build_eval_awareness_control),
    "deception_instructed": DatasetEntry(
        build_deception_instructed, in_families=True, transfer="deception_roleplay"
    ),
    "deception_roleplay": DatasetEntry(in_families=True),
    "deception_told_to_lie": DatasetEntry(in_families=True),
    "knowledge_qa": DatasetEntry(in_families=True),
    "sandbagging": DatasetEntry(in_families=True),
    "sandbagging_organism": DatasetEntry(in_families=True, familiarity_control=True),
    "thinking_progress": DatasetEntry(),
}

# Views of the table, for the code that needs one aspect of it.
BUILDERS: dict[str, Builder] = {n: e.build for n, e in DATASETS.items() if e.build is not None}
GENERATED: tuple[str, ...] = tuple(n for n, e in DATASETS.items() if e.build is None)
FAMILIES: dict[str, list[str]] = {
    family: [n for n, e in DATASETS.items() if e.family == family]
    for family in dict.fromkeys(e.family for e in DATASETS.values() if e.family)
}
# The format-matched control of each dataset that has one: the surface feature varies, the
# concept does not, so a probe reading the concept scores it near chance (shortcut audit).
SHORTCUT_CONTROLS: dict[str, str] = {n: e.control for n, e in DATASETS.items() if e.control}
BENIGN_CONTROLS: dict[str, str] = {
    n: e.benign_control for n, e in DATASETS.items() if e.benign_control
}
BINARY_FAMILIES: tuple[str, ...] = tuple(n for n, e in DATASETS.items() if e.in_families)
TRANSFER: dict[str, str] = {n: e.transfer for n, e in DATASETS.items() if e.transfer}
FAMILIARITY_CONTROLLED: tuple[str, ...] = tuple(
    n for n, e in DATASETS.items() if e.familiarity_control
)


def dataset_names() -> list[str]:
    return sorted(BUILDERS)


def load_dataset(
    name: str,
    seed: int = 0,
    *,
    model: "LoadedModel | None" = None,
    limit: int | None = None,
    columns: FileColumns | None = None,
) -> Dataset:
    """A built-in dataset by name, or a user's CSV/TSV/JSONL/Parquet file by path (read with
    `columns`).

    Generated datasets need the `model` whose answers they label (cached per model)."""
    if name in BUILDERS:
        return BUILDERS[name](seed)
    if name in GENERATED:
        if model is None:
            raise ProbewatchError(
                f"dataset {name!r} is labelled from a model's own answers",
                hint="give the model (--model), e.g. the default SmolLM2",
            )
        from probewatch.data.generated import GENERATED_BUILDERS

        return GENERATED_BUILDERS[name](model, seed, limit)
    if Path(name).suffix.lower() in SUFFIXES:
        return load_file(name, columns)
    raise ProbewatchError(
        f"unknown dataset {name!r}",
        hint=f"built-in datasets: {', '.join(dataset_names())}; generated by the model: "
        f"{', '.join(GENERATED)}; or a "
        f"{'/'.join(SUFFIXES)} file path (--file)",
    )


def needs_model(source: DataSource) -> bool:
    """Whether `source` is labelled from a model's answers (so it loads after the model)."""
    return source.dataset in GENERATED


def load_source(source: DataSource, model: "LoadedModel | None" = None) -> Dataset:
    """The dataset a config names: a built-in one, or the user's file read with its columns.

    Checked without a model where possible, so a typo fails before the model loads."""
    name = source.require()
    if source.file is not None:
        return limit_examples(load_file(source.file, source.columns()), source.limit, source.seed)
    if name in GENERATED:  # a generated set builds only `limit` items in the first place
        return load_dataset(name, source.seed, model=model, limit=source.limit)
    return limit_examples(load_dataset(name, source.seed), source.limit, source.seed)


def limit_examples(dataset: Dataset, limit: int | None, seed: int = 0) -> Dataset:
    """At most `limit` examples: a seeded, stable sample kept in dataset order (each keeps
    its split), noted on the card. None or a limit past the size: the dataset as it is."""
    if limit is None or limit >= len(dataset.examples):
        return dataset

    ranked = sorted(range(len(dataset.examples)), key=lambda i: stable_hash("limit", seed, i))
    keep = sorted(ranked[:limit])
    card = replace(
        dataset.card,
        construction=f"{dataset.card.construction} Limited to a seeded sample of {limit} of "
        f"its {len(dataset.examples)} examples.",
    )
    return Dataset(card, [dataset.examples[i] for i in keep])


__all__ = [
    "BENIGN_CONTROLS",
    "BINARY_FAMILIES",
    "BUILDERS",
    "DATASETS",
    "FAMILIARITY_CONTROLLED",
    "FAMILIES",
    "GENERATED",
    "SHORTCUT_CONTROLS",
    "TRANSFER",
    "Dataset",
    "DatasetCard",
    "DatasetEntry",
    "Example",
    "dataset_names",
    "limit_examples",
    "load_dataset",
    "load_file",
    "load_source",
    "needs_model",
    "require_binary",
]
