"""Exporting the event log to JSONL or CSV (`probewatch events --export`)."""

import csv
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from probewatch.errors import ProbewatchError
from probewatch.paths import atomic_text
from probewatch.server.events import (
    FIELDS,
    ORDER,
    EventFilter,
    EventLog,
    damaged,
    from_row,
    page,
    sidecars,
)

FORMATS = ("jsonl", "csv")


def export_events(
    log: EventLog,
    out: str | Path,
    fmt: str | None = None,
    where: EventFilter | None = None,
    limit: int | None = None,
) -> int:
    """Write the matching events (newest first) to `out`; return how many.

    `fmt` is "jsonl" or "csv", by default taken from the suffix of `out`. The file appears
    whole or not at all (temp file, fsync, rename); an existing file is replaced. CSV has one
    column per field, structured fields JSON-encoded, plus `verdict.<probe>.score` and
    `verdict.<probe>.flagged` for every probe that appears.
    """
    out = Path(out).expanduser()
    fmt = export_format(out, fmt)
    if out.resolve() in {log.path.resolve(), *sidecars(log.path.resolve())}:
        raise ProbewatchError(f"{out} is the event log itself", hint="export to another file")
    clause, params = (where or EventFilter()).sql()
    selected = f"SELECT {', '.join(FIELDS)} FROM events{clause} {ORDER}{page(limit, 0)}"
    # A private read connection: one snapshot for both passes, and no lock held while the
    # file is written, so the server keeps recording meanwhile.
    conn = log.reader()
    try:
        conn.execute("BEGIN")  # a read transaction: both passes see the same events
        with atomic_text(out, newline="" if fmt == "csv" else None) as f:
            rows = (from_row(r) for r in conn.execute(selected, params))
            n = (
                _write_jsonl(f, rows)
                if fmt == "jsonl"
                else _write_csv(f, rows, _probes(conn, selected, params))
            )
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise damaged(log.path, exc) from exc
    finally:
        conn.close()
    return n


def _probes(conn: sqlite3.Connection, selected: str, params: list[Any]) -> list[str]:
    sql = f"SELECT DISTINCT v.key FROM ({selected}) AS e, json_each(e.verdicts) AS v ORDER BY v.key"
    return [r[0] for r in conn.execute(sql, params)]


def export_format(out: Path, fmt: str | None) -> str:
    """The export format: `fmt` if given, else from the suffix of `out`."""
    if fmt is None:
        fmt = out.suffix.lower().lstrip(".")
        if fmt == "json":
            fmt = "jsonl"
        if fmt not in FORMATS:
            raise ProbewatchError(
                f"cannot tell the export format from {out.name!r}",
                hint="name the file .jsonl or .csv, or pass the format (jsonl or csv)",
            )
    if fmt not in FORMATS:
        raise ProbewatchError(f"unknown export format {fmt!r}", hint="use jsonl or csv")
    return fmt


def _write_jsonl(f: IO[str], events: Iterator[dict[str, Any]]) -> int:
    n = 0
    for event in events:
        f.write(json.dumps(event, ensure_ascii=False) + "\n")
        n += 1
    return n


def _write_csv(f: IO[str], events: Iterator[dict[str, Any]], probes: list[str]) -> int:
    header = [*FIELDS]
    for probe in probes:
        header += [f"verdict.{probe}.score", f"verdict.{probe}.flagged"]
    writer = csv.writer(f)
    writer.writerow(header)
    n = 0
    for event in events:
        cells = [_csv_cell(event[name]) for name in FIELDS]
        for probe in probes:
            verdict = event["verdicts"].get(probe)
            if verdict is None:
                cells += ["", ""]
            else:
                cells += [_csv_cell(verdict["score"]), _csv_cell(verdict["flagged"])]
        writer.writerow(cells)
        n += 1
    return n


def _csv_cell(value: Any) -> str:
    """Strings as they are, null as an empty cell, everything else as JSON (true, 0.5, [...])."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
