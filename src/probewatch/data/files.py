"""Bring your own data: a CSV or JSONL file with a text column and a label column."""

import csv
import json
from pathlib import Path
from typing import Any

from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.errors import ProbewatchError

_TRUE = {"1", "1.0", "true", "yes", "t", "y"}
_FALSE = {"0", "0.0", "false", "no", "f", "n"}


def parse_label(value: Any, where: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and float(value) in (0.0, 1.0):
        return float(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    raise ProbewatchError(
        f"{where}: label {value!r} is not a binary label",
        hint="use 0/1, true/false or yes/no",
    )


def _read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(location, row) pairs; the location names the line for error messages."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path.name} line {number}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ProbewatchError(
                        f"{where}: not valid JSON ({exc.msg})",
                        hint="each line must be one JSON object",
                    ) from exc
                if not isinstance(row, dict):
                    raise ProbewatchError(f"{where}: expected a JSON object, got {row!r:.60}")
                rows.append((where, row))
        return rows
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            # Line 1 is the header, so data rows start at line 2.
            return [(f"{path.name} line {n}", row) for n, row in enumerate(reader, start=2)]
    raise ProbewatchError(
        f"cannot read {path.name}: unknown file type {suffix or '(none)'}",
        hint="use .csv, .tsv or .jsonl",
    )


def load_file(path: str | Path, text_column: str = "text", label_column: str = "label") -> Dataset:
    """Load a user's labelled file; every row goes to the `test` split (it is for evaluation)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ProbewatchError(f"no such file: {file}", hint="check the path")
    rows = _read_rows(file)
    if not rows:
        raise ProbewatchError(f"{file.name} has no rows", hint="add labelled examples")
    columns = set(rows[0][1])
    for column in (text_column, label_column):
        if column not in columns:
            raise ProbewatchError(
                f"{file.name} has no column {column!r} (columns: {', '.join(sorted(columns))})",
                hint="name the right columns with --text-column and --label-column",
            )
    examples = []
    for where, row in rows:
        text = row.get(text_column)
        if not isinstance(text, str) or not text.strip():
            raise ProbewatchError(f"{where}: the {text_column!r} value is missing or empty")
        if row.get(label_column) in (None, ""):
            raise ProbewatchError(f"{where}: the {label_column!r} value is missing")
        examples.append(
            Example(text=text, label=parse_label(row[label_column], where), split="test")
        )
    card = DatasetCard(
        name=file.name,
        description=f"user file {file}",
        source=str(file),
        license="the user's",
        construction=f"text from column {text_column!r}, label from {label_column!r}",
        split_rule="all rows are test rows",
    )
    return Dataset(card, examples)
