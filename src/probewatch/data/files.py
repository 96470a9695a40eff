"""Bring your own data: a CSV, TSV, JSONL or Parquet file of labelled text or chats.

Columns (names are configurable; only the label and one of text/messages are required):

- `text`: the text to probe.
- `messages`: a chat, as a list of {"role", "content"} objects (a JSON string in CSV/TSV; a
  list or a JSON string in JSONL and Parquet). Its final message is what gets probed; a chat
  that ends with a user message is rendered with the generation prompt. When a row has
  messages, `text` is optional and defaults to the final message's content.
- `label`: 0/1, true/false or yes/no for a binary task; any number for regression.
  `task="auto"` (the default) picks regression only when some label is fractional (0.25);
  integer scores such as 1-5 need `task="regression"` so that a stray '2' in a binary file is
  reported instead of silently turning the task into regression.
- `spans`: optional character spans to probe, as a list of [start, end] pairs (end exclusive)
  into the probed string (the text, or a chat's final message). Stored in `meta["spans"]`;
  a file with spans is probed at their tokens (positions="span", the card's default), so
  every row then needs spans (or pass other positions).
- `split`: optional, `train` or `test` per row. Without it every row is a test row.
- `group`: optional entity key that must not cross splits (used by cross-validation).

Every error names the file and the line (CSV/TSV/JSONL, counting the header as line 1) or the
row (Parquet, counting from 1).
"""

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from probewatch.config import FileColumns, Task
from probewatch.data.base import SPLITS, Dataset, DatasetCard, Example
from probewatch.data.common import split_for
from probewatch.errors import ProbewatchError

SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq")
ROLES = ("system", "user", "assistant", "tool")
NO_SPLIT_RULE = "all rows are test rows (no split column)"
TEST_ONE_IN = 5  # split_by_group: about one group in five goes to test
PYARROW_INSTALL = "pip install pyarrow==26.0.1 (make setup installs it)"

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
        hint="use 0/1, true/false or yes/no; for a continuous target use task='regression'",
    )


def parse_score(value: Any, where: str) -> float:
    """A regression label: any finite number (or a string holding one)."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProbewatchError(
            f"{where}: label {value!r} is not a number", hint="regression labels must be numbers"
        ) from None
    if not math.isfinite(number):
        raise ProbewatchError(f"{where}: label {value!r} is not a finite number")
    return number


def _is_fraction(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and not number.is_integer()


Rows = list[tuple[str, dict[str, Any]]]


def _read_jsonl(path: Path) -> tuple[list[str], Rows]:
    rows: Rows = []
    columns: dict[str, None] = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            row = _json(line, f"{where}: not", "each line must be one JSON object")
            if not isinstance(row, dict):
                raise ProbewatchError(f"{where}: expected a JSON object, got {row!r:.60}")
            columns.update(dict.fromkeys(row))
            rows.append((where, row))
    return list(columns), rows


def _read_csv(path: Path, delimiter: str) -> tuple[list[str], Rows]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        rows: Rows = []
        # Line 1 is the header, so data rows start at line 2 (a quoted field with a newline
        # shifts later numbers; reader.line_num follows the real lines).
        for row in reader:
            where = f"{path.name} line {reader.line_num}"
            if None in row:
                raise ProbewatchError(
                    f"{where}: more fields than the header has columns",
                    hint="quote fields that contain the delimiter",
                )
            rows.append((where, row))
        return list(reader.fieldnames or []), rows


def _read_parquet(path: Path) -> tuple[list[str], Rows]:
    try:
        import pyarrow.parquet as pq  # lazy: only Parquet users need it
    except ImportError:
        raise ProbewatchError(
            f"reading {path.name} needs the pyarrow package", hint=PYARROW_INSTALL
        ) from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ProbewatchError(
            f"cannot read {path.name} as Parquet: {exc}", hint="check that it is a Parquet file"
        ) from exc
    rows = [(f"{path.name} row {i}", row) for i, row in enumerate(table.to_pylist(), start=1)]
    return list(table.column_names), rows


def _read_rows(path: Path) -> tuple[list[str], Rows]:
    """The file's columns and its (location, row) pairs; the location names the line or row."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, "\t" if suffix == ".tsv" else ",")
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path)
    raise ProbewatchError(
        f"cannot read {path.name}: unknown file type {suffix or '(none)'}",
        hint=f"use one of {', '.join(SUFFIXES)}",
    )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _json(text: str, what: str, hint: str) -> Any:
    """`text` parsed as JSON, or an error "<what> valid JSON (<why>)" with `hint`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProbewatchError(f"{what} valid JSON ({exc.msg})", hint=hint) from exc


def parse_messages(value: Any, where: str) -> tuple[dict[str, str], ...]:
    """A chat from a list (or JSON string) of {"role", "content"} objects."""
    if isinstance(value, str):
        hint = 'write a JSON list such as [{"role": "user", "content": "Hi"}]'
        value = _json(value, f"{where}: messages are not", hint)
    if not isinstance(value, list) or not value:
        raise ProbewatchError(
            f"{where}: messages must be a non-empty list of {{role, content}} objects",
            hint='for example [{"role": "user", "content": "Hi"}]',
        )
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping) or not {"role", "content"} <= set(message):
            raise ProbewatchError(
                f"{where}: message {i} is not an object with 'role' and 'content'",
                hint='for example {"role": "user", "content": "Hi"}',
            )
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise ProbewatchError(
                f"{where}: message {i} has role {role!r}", hint=f"use one of {', '.join(ROLES)}"
            )
        if not isinstance(content, str) or not content.strip():
            raise ProbewatchError(f"{where}: message {i} has no text content")
        messages.append({"role": str(role), "content": content})
    return tuple(messages)


def parse_spans(value: Any, probed: str, where: str) -> list[list[int]]:
    """Character spans [start, end) into `probed`, checked against its length."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ProbewatchError(
                f"{where}: spans are not valid JSON ({exc.msg})", hint="write e.g. [[0, 5]]"
            ) from exc
    if not isinstance(value, list) or not value:
        raise ProbewatchError(f"{where}: spans must be a non-empty list of [start, end] pairs")
    spans = []
    for span in value:
        ok = (
            isinstance(span, list | tuple)
            and len(span) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in span)
        )
        if not ok or not 0 <= span[0] < span[1] <= len(probed):
            raise ProbewatchError(
                f"{where}: span {span!r} is not a [start, end] pair within the text "
                f"(0 <= start < end <= {len(probed)})",
                hint="spans are character offsets, end exclusive, into the text or the chat's "
                "final message",
            )
        spans.append([int(span[0]), int(span[1])])
    return spans


def _resolve_task(task: Task, labels: list[tuple[str, Any]]) -> Literal["binary", "regression"]:
    if task not in ("auto", "binary", "regression"):
        raise ProbewatchError(f"unknown task {task!r}", hint="use auto, binary or regression")
    if task != "auto":
        return task
    return "regression" if any(_is_fraction(v) for _, v in labels) else "binary"


def load_file(path: str | Path, columns: FileColumns | None = None) -> Dataset:
    """Load a user's labelled file (see the module docstring for the columns)."""
    c = columns or FileColumns()
    text_column, label_column = c.text_column, c.label_column
    messages_column, spans_column = c.messages_column, c.spans_column
    split_column, group_column = c.split_column, c.group_column
    file = Path(path).expanduser()
    if not file.is_file():
        raise ProbewatchError(f"no such file: {file}", hint="check the path")
    header, rows = _read_rows(file)
    if not rows:
        raise ProbewatchError(f"{file.name} has no rows", hint="add labelled examples")
    listed = ", ".join(header)
    if label_column not in header:
        raise ProbewatchError(
            f"{file.name} has no column {label_column!r} (columns: {listed})",
            hint="name the label column with --label-column",
        )
    has_messages = messages_column in header
    if text_column not in header and not has_messages:
        raise ProbewatchError(
            f"{file.name} has no column {text_column!r} or {messages_column!r} (columns: {listed})",
            hint="name the text column with --text-column, or give chats in a 'messages' column",
        )
    labels = []
    for where, row in rows:
        if _missing(row.get(label_column)):
            raise ProbewatchError(f"{where}: the {label_column!r} value is missing")
        labels.append((where, row[label_column]))
    kind = _resolve_task(c.task, labels)
    parse = parse_score if kind == "regression" else parse_label
    examples = []
    for (where, row), (_, raw_label) in zip(rows, labels, strict=True):
        messages = None
        if has_messages and not _missing(row.get(messages_column)):
            messages = parse_messages(row[messages_column], where)
        text = row.get(text_column)
        if _missing(text):
            if messages is None:
                raise ProbewatchError(f"{where}: the {text_column!r} value is missing or empty")
            text = messages[-1]["content"]
        if not isinstance(text, str):
            raise ProbewatchError(f"{where}: the {text_column!r} value is not text: {text!r:.60}")
        meta: dict[str, Any] = {}
        if spans_column in header and not _missing(row.get(spans_column)):
            probed = messages[-1]["content"] if messages else text
            meta["spans"] = parse_spans(row[spans_column], probed, where)
        split = "test"
        if split_column in header:
            split = str(row.get(split_column) or "").strip().lower()
            if split not in SPLITS:
                raise ProbewatchError(
                    f"{where}: split {row.get(split_column)!r} is not one of {', '.join(SPLITS)}",
                    hint=f"leave out the {split_column!r} column to make every row a test row",
                )
        group = row.get(group_column) if group_column in header else None
        examples.append(
            Example(
                text=text,
                label=parse(raw_label, where),
                split=split,
                group="" if _missing(group) else str(group),
                messages=messages,
                meta=meta,
            )
        )
    _check_labels(file.name, kind, [ex.label for ex in examples], c.allow_one_class)
    card = DatasetCard(
        name=file.name,
        description=f"user file {file}",
        source=str(file),
        license="the user's",
        construction=(
            f"text from column {text_column!r}"
            + (f" and chats from {messages_column!r}" if has_messages else "")
            + f", {kind} label from {label_column!r}"
            + (f", spans from {spans_column!r}" if spans_column in header else "")
        ),
        split_rule=(f"from column {split_column!r}" if split_column in header else NO_SPLIT_RULE),
        task=kind,
        positions="span" if any("spans" in ex.meta for ex in examples) else None,
    )
    return Dataset(card, examples)


def _check_labels(name: str, kind: str, labels: list[float], allow_one_class: bool) -> None:
    distinct = set(labels)
    if len(distinct) > 1 or allow_one_class:
        return
    value = labels[0]
    if kind == "regression":
        raise ProbewatchError(
            f"{name}: every label is {value:g}", hint="a regression target needs varying labels"
        )
    raise ProbewatchError(
        f"{name} has only one class (every label is {int(value)})",
        hint="a probe needs examples of both classes; add the missing class "
        "(or pass allow_one_class=True to load a control set for evaluation only)",
    )


def split_by_group(dataset: Dataset, seed: int = 0) -> Dataset:
    """A file without a split column, split for training: about one group in TEST_ONE_IN
    goes to test by a hash of (seed, group), so no group is on both sides; a row without a
    group is its own group. Deterministic: the same file and seed give the same split."""
    examples = [
        replace(ex, split=split_for(ex.group or f"row:{i}", seed, TEST_ONE_IN))
        for i, ex in enumerate(dataset.examples)
    ]
    grouped = any(ex.group for ex in dataset.examples)
    unit = "group" if grouped else "row"
    card = replace(
        dataset.card,
        split_rule=f"no split column: by {unit}, sha256('split', {seed}, {unit}) mod "
        f"{TEST_ONE_IN} == 0 goes to test",
    )
    return Dataset(card, examples)


def needs_split(dataset: Dataset) -> bool:
    """A user's file whose rows are all test rows because it has no split column."""
    return dataset.card.split_rule == NO_SPLIT_RULE
