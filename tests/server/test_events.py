"""The event log: round trips, filters, exports, refusals, and that acknowledged events survive."""

import argparse
import csv
import json
import os
import select
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from probewatch.errors import ProbewatchError
from probewatch.server.events import EventFilter, EventLog, default_events_path
from probewatch.server.events_cli import add_events_parser, parse_time
from probewatch.server.export import export_events


def make_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "created": 1_700_000_000.0,
        "request_id": "req-0",
        "model": "tiny-llama",
        "model_fingerprint": "sha256:abc",
        "probes": {"truth": "1", "harm": "1"},
        "verdicts": {
            "truth": {"score": 0.9, "threshold": 0.5, "flagged": True, "first_alert_token": 2},
            "harm": {"score": 0.1, "threshold": 0.95, "flagged": False, "first_alert_token": None},
        },
        "alerts": [{"probe": "truth", "token_index": 2, "value": 0.93, "threshold": 0.5}],
        "prompt": [{"role": "user", "content": "What is the capital of France?"}],
        "response": "The capital of France is Paris.",
        "n_tokens": 7,
        "steering": None,
    }
    event.update(overrides)
    return event


def verdict(score: float, flagged: bool) -> dict[str, Any]:
    return {"score": score, "threshold": 0.5, "flagged": flagged, "first_alert_token": None}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "events.sqlite"


def test_record_get_round_trip_and_settings(db: Path) -> None:
    with EventLog(db) as log:
        event_id = log.record(make_event())
        got = log.get(event_id)
        expected = {**make_event(), "id": event_id, "flagged": True, "finish_reason": None}
        assert got == expected  # flagged from the verdicts
        assert len(event_id) == 32 and int(event_id, 16) >= 0  # uuid4 hex
        assert log.get("nope") is None
        assert log.record(make_event(id="mine", flagged=False)) == "mine"
        assert log.get("mine")["flagged"] is False
        conn = log._conn
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        version = "SELECT value FROM meta WHERE key = 'schema_version'"
        assert conn.execute(version).fetchone()[0] == "2"
        with pytest.raises(ProbewatchError, match="already in the event log"):
            log.record(make_event(id="mine"))
    assert stat.S_IMODE(db.stat().st_mode) == 0o600  # prompts are private
    with pytest.raises(ProbewatchError, match="closed"):
        log.get(event_id)
    log.close()  # twice is fine
    assert default_events_path().name == "events.sqlite"


def test_query_order_filters_and_count(db: Path) -> None:
    log = EventLog(db)
    t0 = 1_700_000_000.0
    specs = {  # name: (created, truth flagged or absent, harm flagged or absent)
        "a": (t0, True, False),
        "b": (t0 + 10, False, None),
        "c": (t0 + 20, None, True),
        "d": (t0 + 20, False, False),  # same time as c: insertion order breaks the tie
        "e": (t0 + 30, True, True),
    }
    for name, (created, truth, harm) in specs.items():
        verdicts = {}
        if truth is not None:
            verdicts["truth"] = verdict(0.9 if truth else 0.1, truth)
        if harm is not None:
            verdicts["harm"] = verdict(0.9 if harm else 0.1, harm)
        log.record(make_event(created=created, verdicts=verdicts, request_id=name))

    def names(limit: int = 50, offset: int = 0, **kw: Any) -> list[str]:
        return [e["request_id"] for e in log.query(EventFilter(**kw), limit, offset)]

    assert names() == ["e", "d", "c", "b", "a"]
    assert names(limit=2) == ["e", "d"]
    assert names(limit=2, offset=2) == ["c", "b"]
    assert names(flagged=True) == ["e", "c", "a"]
    assert names(flagged=False) == ["d", "b"]
    assert names(probe="truth") == ["e", "d", "b", "a"]
    assert names(probe="truth", flagged=True) == ["e", "a"]
    assert names(probe="truth", flagged=False) == ["d", "b"]
    assert names(probe="harm", flagged=True) == ["e", "c"]
    assert names(probe="missing") == []
    assert names(since=t0 + 10, until=t0 + 30) == ["d", "c", "b"]  # since inclusive, until not
    assert log.count() == 5
    assert log.count(EventFilter(probe="truth", flagged=True)) == 2
    assert log.count(EventFilter(since=t0 + 20)) == 3
    for bad in ({"limit": -1}, {"offset": 1.5}):
        with pytest.raises(ProbewatchError):
            log.query(**bad)
    for where in (EventFilter(since="yesterday"), EventFilter(probe="")):
        with pytest.raises(ProbewatchError):
            log.query(where)
    log.close()


def test_store_text_false_keeps_no_text_on_disk(db: Path, tmp_path: Path) -> None:
    secret_prompt, secret_response = "zebra-prompt-3141", "okapi-response-2718"
    event = make_event(
        prompt=[{"role": "user", "content": secret_prompt}], response=secret_response
    )
    with EventLog(db, store_text=False) as log:
        event_id = log.record(event)
        got = log.get(event_id)
        assert got is not None and got["prompt"] is None and got["response"] is None
        assert got["verdicts"] == event["verdicts"]
        on_disk = b"".join(p.read_bytes() for p in db.parent.iterdir())  # db, -wal, -shm
    on_disk += db.read_bytes()
    assert secret_prompt.encode() not in on_disk
    assert secret_response.encode() not in on_disk
    # The check can see text: the same event with store_text=True does put it in the file.
    other = tmp_path / "with-text.sqlite"
    with EventLog(other) as log:
        log.record(event)
    assert secret_response.encode() in other.read_bytes()


def test_export_jsonl_and_csv(db: Path, tmp_path: Path) -> None:
    log = EventLog(db)
    first = log.record(make_event(created=1.0, response='a "quoted",\nmultiline answer'))
    second = log.record(
        make_event(created=2.0, verdicts={"harm": verdict(0.97, True)}, response=None)
    )

    out = tmp_path / "out" / "events.jsonl"
    assert export_events(log, out) == 2
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [log.get(second), log.get(first)]

    out_csv = tmp_path / "out" / "events.csv"
    assert export_events(log, out_csv, "csv", EventFilter(probe="truth")) == 1  # filters apply
    assert export_events(log, out_csv, "csv") == 2  # and an existing file is replaced
    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [second, first]
    new, old = rows
    assert old["response"] == 'a "quoted",\nmultiline answer'
    assert old["verdict.truth.score"] == "0.9" and old["verdict.truth.flagged"] == "true"
    assert old["verdict.harm.flagged"] == "false"
    assert new["verdict.truth.score"] == "" and new["verdict.harm.score"] == "0.97"
    assert new["response"] == "" and new["flagged"] == "true"
    assert json.loads(old["prompt"]) == make_event()["prompt"]
    assert json.loads(old["verdicts"]) == make_event()["verdicts"]
    assert float(old["created"]) == 1.0 and old["n_tokens"] == "7"
    assert sorted(p.name for p in out.parent.iterdir()) == ["events.csv", "events.jsonl"]

    with pytest.raises(ProbewatchError, match="export format"):
        export_events(log, tmp_path / "events.txt")
    with pytest.raises(ProbewatchError, match="event log itself"):
        export_events(log, db, "jsonl")
    log.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": None}, "model"),
        ({"model": ""}, "model"),
        ({"created": "today"}, "created"),
        ({"n_tokens": -1}, "n_tokens"),
        ({"n_tokens": True}, "n_tokens"),
        ({"flagged": "yes"}, "flagged"),
        ({"probes": ["truth"]}, "probes"),
        ({"verdicts": {"truth": {"score": 0.5}}}, "verdicts.truth.threshold"),
        ({"verdicts": {"truth": verdict(float("nan"), False)}}, "verdicts.truth.score"),
        ({"verdicts": {"truth": {**verdict(0.5, False), "flagged": 1}}}, "verdicts.truth.flagged"),
        ({"alerts": [{"probe": "harm", "token_index": "3"}]}, "alerts[0].token_index"),
        ({"prompt": "just a string"}, "prompt"),
        ({"prompt": [{"role": "user"}]}, "prompt[0].content"),
        ({"response": 42}, "response"),
        ({"steering": {"vector": "v", "strength": float("inf")}}, "steering.strength"),
        ({"colour": "red"}, "colour"),
        ({"id": ""}, "id"),
    ],
)
def test_bad_events_are_rejected_naming_the_field(
    db: Path, change: dict[str, Any], field: str
) -> None:
    with EventLog(db) as log:
        with pytest.raises(ProbewatchError) as info:
            log.record(make_event(**change))
        assert repr(field) in str(info.value)
        assert log.count() == 0


def test_missing_field_is_named(db: Path) -> None:
    event = make_event()
    del event["verdicts"]
    with EventLog(db) as log, pytest.raises(ProbewatchError, match="'verdicts' is missing"):
        log.record(event)


def _refused_untouched(path: Path, match: str) -> None:
    before = path.read_bytes()
    neighbours = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(ProbewatchError, match=match) as info:
        EventLog(path)
    assert info.value.hint
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == neighbours  # no -wal, no -shm


def test_non_sqlite_and_damaged_files_are_refused_and_left_alone(tmp_path: Path) -> None:
    text = tmp_path / "notes.sqlite"
    text.write_text("my precious notes\n" * 100)
    _refused_untouched(text, "not an SQLite database")

    damaged = tmp_path / "damaged" / "events.sqlite"
    with EventLog(damaged) as log:
        log.record(make_event())
    data = bytearray(damaged.read_bytes())
    data[100:4096] = b"\xa5" * (4096 - 100)  # keep the header, wreck the schema page
    damaged.write_bytes(bytes(data))
    _refused_untouched(damaged, "cannot be used")

    foreign = tmp_path / "foreign" / "app.db"
    foreign.parent.mkdir()
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    _refused_untouched(foreign, "not a probewatch event log")

    newer = tmp_path / "newer" / "events.sqlite"
    EventLog(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    _refused_untouched(newer, "schema version 99")

    with pytest.raises(ProbewatchError, match="directory"):
        EventLog(tmp_path)


WRITER = """
import sys
from probewatch.server.events import EventLog

log = EventLog(sys.argv[1])
pause_after = int(sys.argv[2])  # 0: never pause
for i in range(100_000):  # bounded, in case the kill never comes
    event_id = log.record({
        "request_id": str(i), "model": "m", "probes": {}, "alerts": [], "n_tokens": i,
        "verdicts": {"p": {"score": 0.5, "threshold": 0.5, "flagged": i % 2 == 0}},
        "response": "x" * (i % 500),
    })
    sys.stdout.write(event_id + "\\n")
    sys.stdout.flush()
    if i + 1 == pause_after:
        sys.stdin.read()  # idle until killed
"""


def _read_ids_then_kill(db: Path, k: int, pause: bool) -> list[str]:
    """Start a writer, read `k` acknowledged ids from it, SIGKILL it.

    With `pause`, the writer idles after the k-th id, so the kill finds exactly the events it
    acknowledged (anything committed lazily after returning would be lost). Without, it keeps
    writing and the kill lands wherever it is, usually inside a commit.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(k if pause else 0)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    ids: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while len(ids) < k:
            ready, _, _ = select.select(
                [proc.stdout], [], [], max(0.0, deadline - time.monotonic())
            )
            line = proc.stdout.readline() if ready else ""
            if not line:
                proc.kill()
                pytest.fail(f"writer stopped after {len(ids)} ids: {proc.stderr.read()}")
            ids.append(line.strip())
        if pause:
            time.sleep(0.05)  # time for a lazy commit to happen, were there one
    finally:
        # SIGKILL: no atexit, no close(), no checkpoint.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL
    return ids


def test_acknowledged_events_survive_sigkill(db: Path) -> None:
    acknowledged: list[str] = []
    # First the kill right after the last acknowledgement, then kills in mid-stream.
    for pause in (True, False, False):
        ids = _read_ids_then_kill(db, k=25, pause=pause)
        acknowledged += ids
        with EventLog(db) as log:
            conn = log._conn
            assert conn is not None
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {e["id"]: e for e in log.query(limit=1_000_000)}
        missing = [i for i in acknowledged if i not in stored]
        assert not missing, f"{len(missing)} acknowledged events lost"
        if pause:
            assert set(stored) == set(ids)  # and nothing the writer did not acknowledge
    # Each writer's events are whole and without gaps: request ids 0..n-1 per run.
    runs: dict[int, int] = {}
    for e in stored.values():
        runs[int(e["request_id"])] = runs.get(int(e["request_id"]), 0) + 1
        assert e["n_tokens"] == int(e["request_id"])
        assert e["response"] == "x" * (e["n_tokens"] % 500)
    counts = [runs[i] for i in sorted(runs)]
    assert counts == sorted(counts, reverse=True) and counts[0] == 3


def test_concurrent_writes_from_threads_all_land(db: Path) -> None:
    log = EventLog(db)
    n_threads, per_thread = 8, 25
    returned: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def worker(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                returned.append(log.record(make_event(request_id=f"{t}-{i}")))
                log.query(limit=5)  # readers interleave with writers
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(returned)) == n_threads * per_thread
    assert log.count() == n_threads * per_thread
    log.close()
    with EventLog(db) as reopened:
        stored = {e["id"] for e in reopened.query(limit=10_000)}
    assert stored == set(returned)


# -- the CLI helper ---------------------------------------------------------------------------


def run_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="probewatch")
    sub = parser.add_subparsers(dest="command", required=True)
    add_events_parser(sub)
    args = parser.parse_args(["events", *argv])
    args.func(args)


def test_cli_lists_filters_and_exports(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with EventLog(db) as log:
        now = time.time()
        old = log.record(make_event(created=now - 86_400 * 10, response="old answer"))
        new = log.record(
            make_event(
                verdicts={"harm": verdict(0.99, True)},
                response="line one\nline two \x1b[31m" + "y" * 100,
                model="a-model-with-a-very-long-name",
                created=now - 2,
            )
        )
        quiet = log.record(
            make_event(verdicts={"harm": verdict(0.01, False)}, response=None, created=now - 1)
        )

    run_cli(["--db", str(db)])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["time", "id", "model", "flagged", "response"]
    assert quiet[:8] in lines[1] and "(not stored)" in lines[1]
    assert new[:8] in lines[2] and "harm" in lines[2] and "line one line two" in lines[2]
    assert "\x1b" not in out and "y" * 60 not in out  # one line, no escapes, 60 chars at most
    assert old[:8] in lines[3] and "truth" in lines[3]
    assert lines[-1] == "3 of 3 events"

    run_cli(["--db", str(db), "--json", "--probe", "harm", "--flagged"])
    assert [e["id"] for e in json.loads(capsys.readouterr().out)] == [new]

    run_cli(["--db", str(db), "--json", "--not-flagged"])
    assert [e["id"] for e in json.loads(capsys.readouterr().out)] == [quiet]

    week_ago = time.strftime("%Y-%m-%d", time.localtime(time.time() - 86_400 * 7))
    run_cli(["--db", str(db), "--json", "--since", week_ago, "--limit", "1"])
    assert [e["id"] for e in json.loads(capsys.readouterr().out)] == [quiet]

    out_file = tmp_path / "export.csv"
    run_cli(["--db", str(db), "--export", str(out_file)])
    assert "wrote 3 events" in capsys.readouterr().out
    with out_file.open(newline="") as f:
        assert [r["id"] for r in csv.DictReader(f)] == [quiet, new, old]
    with pytest.raises(ProbewatchError, match="exists"):
        run_cli(["--db", str(db), "--export", str(out_file)])
    run_cli(["--db", str(db), "--export", str(out_file), "--format", "jsonl", "--overwrite"])
    assert len(out_file.read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--since", "last tuesday"], "not a time"),
        (["--limit", "0"], "--limit"),
        (["--format", "csv"], "--export"),
        (["--export", "out.txt"], "export format"),
        (["--export", "out.csv", "--json"], "--json"),
    ],
)
def test_cli_bad_input(db: Path, argv: list[str], match: str) -> None:
    EventLog(db).close()
    with pytest.raises(ProbewatchError, match=match):
        run_cli(["--db", str(db), *argv])


def test_cli_does_not_create_a_missing_log(tmp_path: Path) -> None:
    with pytest.raises(ProbewatchError, match="no event log"):
        run_cli(["--db", str(tmp_path / "none.sqlite")])
    with pytest.raises(ProbewatchError, match="no event log"):
        run_cli([])  # the default path, in the test's private cache
    assert list(tmp_path.iterdir()) == []


def test_parse_time() -> None:
    assert parse_time("1700000000", "--since") == 1_700_000_000.0
    assert parse_time("2023-11-14T22:13:20Z", "--since") == 1_700_000_000.0
    assert parse_time(None, "--since") is None
