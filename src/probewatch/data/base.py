"""Labelled examples, dataset cards and the content hash that artifacts refer to."""

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from probewatch.metrics.labels import require_binary_labels

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Example:
    """One labelled example: plain `text`, or a chat (`messages`) whose last turn is probed."""

    text: str
    label: float
    split: str = "train"
    group: str = ""  # the entity that must not cross splits (e.g. the city)
    messages: tuple[Mapping[str, str], ...] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spans(self) -> list[tuple[int, int]] | None:
        """The character spans positions="span" reads: `meta["spans"]` (a user file's spans
        column), else `meta["answer_span"]` (the graded entity of a generated answer); into
        the final message's content for a chat, into `text` otherwise. None: no span."""
        spans = self.meta.get("spans") or (
            [self.meta["answer_span"]] if self.meta.get("answer_span") else None
        )
        return [(int(start), int(end)) for start, end in spans] if spans else None

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["messages"] = [dict(m) for m in self.messages] if self.messages else None
        row["meta"] = dict(self.meta)
        return row


@dataclass(frozen=True)
class DatasetCard:
    """What a dataset is and where it came from; shown by `probewatch datasets show`."""

    name: str
    description: str
    source: str
    license: str
    construction: str
    split_rule: str
    version: str = "1"
    seed: int = 0
    task: str = "binary"  # or "regression"
    # The token positions a probe of this dataset reads when none are asked for (e.g. "span"
    # for knowledge_qa's stated entity); None: the trainer's own default.
    positions: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DatasetCard":
        """A card from its `asdict` form; fields it lacks (cards older than them) default."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Dataset:
    card: DatasetCard
    examples: list[Example]

    @property
    def name(self) -> str:
        return self.card.name

    def split(self, name: str) -> list[Example]:
        return [ex for ex in self.examples if ex.split == name]

    def to_jsonl(self) -> str:
        return "".join(
            json.dumps(ex.to_json(), sort_keys=True, ensure_ascii=False) + "\n"
            for ex in self.examples
        )

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSONL of all examples (16 hex digits)."""
        return hashlib.sha256(self.to_jsonl().encode()).hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        per_split: dict[str, Any] = {}
        for split_name in sorted({ex.split for ex in self.examples}):
            rows = self.split(split_name)
            per_split[split_name] = {"n": len(rows), "labels": label_counts(rows)}
        return {
            "name": self.name,
            "n": len(self.examples),
            "hash": self.hash,
            "task": self.card.task,
            "splits": per_split,
        }

    def describe(self) -> dict[str, Any]:
        return {**asdict(self.card), **self.summary()}


def label_counts(examples: Sequence[Example]) -> dict[str, int]:
    counts = Counter(_label_key(ex.label) for ex in examples)
    return dict(sorted(counts.items()))


def _label_key(label: float) -> str:
    return str(int(label)) if float(label).is_integer() else "continuous"


def require_binary(examples: Sequence[Example], what: str) -> None:
    """Refuse empty, one-class or non-0/1 data with a message that names the problem."""
    require_binary_labels([ex.label for ex in examples], what)
