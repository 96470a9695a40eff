"""User files: CSV/TSV/JSONL/Parquet, chats, regression labels, spans, splits, and bad input."""

import builtins
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from probewatch.config import FileColumns
from probewatch.data import load_dataset, load_file
from probewatch.data.files import needs_split, split_by_group
from probewatch.errors import ProbewatchError
from tests.helpers import write

CHAT = [{"role": "user", "content": "Is this safe?"}, {"role": "assistant", "content": "Yes."}]


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


def parquet(path: Path, columns: dict[str, list[Any]]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def test_csv_and_tsv_binary_labels(tmp_path: Path) -> None:
    data = load_file(write(tmp_path / "a.csv", "text,label\nhello,yes\nbye,0\n"))
    assert [(ex.text, ex.label, ex.split) for ex in data.examples] == [
        ("hello", 1.0, "test"),
        ("bye", 0.0, "test"),
    ]
    assert data.card.task == "binary"
    tsv = load_file(write(tmp_path / "a.tsv", "text\tlabel\nhello, world\ttrue\nbye\tfalse\n"))
    assert tsv.examples[0].text == "hello, world"


def test_parquet_with_chats_spans_splits_and_groups(tmp_path: Path) -> None:
    path = parquet(
        tmp_path / "chats.parquet",
        {
            "messages": [CHAT, [{"role": "user", "content": "Tell me a joke"}]],
            "label": [1, 0],
            "spans": [[[0, 3]], None],
            "split": ["train", "test"],
            "group": ["a", "b"],
        },
    )
    data = load_dataset(str(path))
    first, second = data.examples
    assert first.messages == tuple(CHAT) and first.text == "Yes."
    assert first.meta["spans"] == [[0, 3]] and "spans" not in second.meta
    assert (first.split, second.split) == ("train", "test")
    assert (first.group, second.group) == ("a", "b")
    assert second.messages is not None and second.text == "Tell me a joke"
    # A file with spans is probed at them unless told otherwise; one without has no default.
    assert data.card.positions == "span"
    assert load_file(write(tmp_path / "a.csv", "text,label\nhi,1\nbye,0\n")).card.positions is None


def test_chats_as_json_strings_in_csv_and_lists_in_jsonl(tmp_path: Path) -> None:
    quoted = json.dumps(CHAT).replace('"', '""')
    csv_data = load_file(write(tmp_path / "c.csv", f'messages,label\n"{quoted}",1\n"{quoted}",0\n'))
    assert csv_data.examples[0].messages == tuple(CHAT)
    rows = [{"messages": CHAT, "label": 1}, {"text": "plain", "label": 0}]
    mixed = load_file(jsonl(tmp_path / "c.jsonl", rows))
    assert mixed.examples[0].messages == tuple(CHAT) and mixed.examples[1].messages is None


def test_regression_labels_auto_and_explicit(tmp_path: Path) -> None:
    auto = load_file(write(tmp_path / "r.csv", "text,label\na,0.25\nb,1\nc,3.5\n"))
    assert auto.card.task == "regression"
    assert [ex.label for ex in auto.examples] == [0.25, 1.0, 3.5]
    path = write(tmp_path / "stars.csv", "text,label\na,1\nb,5\nc,3\n")
    explicit = load_file(path, FileColumns(task="regression"))
    assert [ex.label for ex in explicit.examples] == [1.0, 5.0, 3.0]
    regression = FileColumns(task="regression")
    assert load_dataset(str(path), columns=regression).card.task == "regression"
    # Integers outside 0/1 are a typo in a binary file until the user says regression.
    with pytest.raises(ProbewatchError, match="line 3: label '5'") as info:
        load_file(path)
    assert "regression" in (info.value.hint or "")


def test_one_class_files_are_refused_unless_allowed(tmp_path: Path) -> None:
    path = write(tmp_path / "one.csv", "text,label\na,1\nb,1\n")
    with pytest.raises(ProbewatchError, match="only one class"):
        load_file(path)
    assert len(load_file(path, FileColumns(allow_one_class=True)).examples) == 2
    with pytest.raises(ProbewatchError, match=re.escape("every label is 0.5")):
        load_file(write(tmp_path / "flat.csv", "text,label\na,0.5\nb,0.5\n"))


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": \n', "line 2: not valid"),
        ("list.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n', "line 2: expected a JSON object"),
        ("odd.csv", "text,label\na,1\nb,maybe\n", "line 3: label 'maybe'"),
        ("gap.csv", "text,label\na,1\nb,\n", "line 3: the 'label' value is missing"),
        ("notext.csv", "text,label\na,1\n ,0\n", "line 3: the 'text' value is missing"),
        ("wide.csv", "text,label\na,1,extra\nb,0\n", "line 2: more fields"),
        ("nolabel.csv", "text,y\na,1\nb,0\n", "no column 'label'"),
        ("nocols.csv", "body,label\na,1\nb,0\n", "no column 'text' or 'messages'"),
        ("split.csv", "text,label,split\na,1,train\nb,0,dev\n", "line 3: split 'dev'"),
        ("msg.csv", 'messages,label\n"[]",1\n', "line 2: messages must be a non-empty list"),
        ("msgjson.csv", "messages,label\nnot json,1\n", "line 2: messages are not valid JSON"),
        (
            "role.jsonl",
            '{"messages": [{"role": "robot", "content": "x"}], "label": 1}\n',
            "line 1: message 0 has role 'robot'",
        ),
        (
            "keys.jsonl",
            '{"text": "a", "label": 0}\n{"messages": [{"content": "x"}], "label": 1}\n',
            "line 2: message 0 is not an object with 'role' and 'content'",
        ),
        ("span.csv", 'text,label,spans\nabc,1,"[[0, 9]]"\nd,0,\n', "line 2: span [0, 9]"),
        ("spanjson.csv", "text,label,spans\nabc,1,oops\nd,0,\n", "line 2: spans are not valid"),
        ("empty.csv", "text,label\n", "has no rows"),
        ("data.xlsx", "", "unknown file type"),
    ],
)
def test_bad_input_names_the_row(tmp_path: Path, name: str, content: str, fragment: str) -> None:
    with pytest.raises(ProbewatchError) as info:
        load_file(write(tmp_path / name, content))
    assert fragment in str(info.value), str(info.value)


def test_bad_parquet_rows_are_named_counting_from_1(tmp_path: Path) -> None:
    path = parquet(tmp_path / "bad.parquet", {"text": ["a", "b", "c"], "label": [1, 0, 7]})
    with pytest.raises(ProbewatchError, match=re.escape("bad.parquet row 3: label 7")):
        load_file(path)
    missing = parquet(tmp_path / "gap.parquet", {"text": ["a", None], "label": [1, 0]})
    with pytest.raises(ProbewatchError, match=re.escape("gap.parquet row 2: the 'text' value")):
        load_file(missing)
    corrupt = write(tmp_path / "corrupt.parquet", "not parquet at all")
    with pytest.raises(ProbewatchError, match=re.escape("cannot read corrupt.parquet as Parquet")):
        load_file(corrupt)


def test_parquet_without_pyarrow_gives_an_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = parquet(tmp_path / "x.parquet", {"text": ["a", "b"], "label": [1, 0]})
    real_import = builtins.__import__

    def no_pyarrow(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ProbewatchError, match="needs the pyarrow package") as info:
        load_file(path)
    assert "pip install pyarrow" in (info.value.hint or "")


def test_unknown_task_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "text,label\na,1\nb,0\n")
    with pytest.raises(ProbewatchError, match="unknown task"):
        load_file(path, FileColumns(task="ranking"))
    with pytest.raises(ProbewatchError, match="no such file"):
        load_file(tmp_path / "missing.csv")


def test_a_file_without_a_split_column_is_split_by_group_for_training(tmp_path: Path) -> None:
    rows = "".join(f"claim {i},{i % 2},g{i // 4}\n" for i in range(200))
    path = write(tmp_path / "mine.csv", "text,label,group\n" + rows)
    data = load_file(path)
    assert needs_split(data) and {e.split for e in data.examples} == {"test"}
    split = split_by_group(data, seed=0)
    assert not needs_split(split) and "by group" in split.card.split_rule
    sides: dict[str, set[str]] = {}
    for example in split.examples:
        sides.setdefault(example.group, set()).add(example.split)
    assert all(len(s) == 1 for s in sides.values())  # no group on both sides
    n_test = len(split.split("test"))
    assert 0.1 < n_test / len(split.examples) < 0.35  # about one group in five
    assert split_by_group(data, seed=0).to_jsonl() == split.to_jsonl()  # deterministic
    assert split_by_group(data, seed=1).to_jsonl() != split.to_jsonl()
