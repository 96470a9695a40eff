"""The durable event log: one row per monitored response, in SQLite.

An event is the shape `GET /v1/events` returns (docs/API.md): id, created, request_id, model,
model_fingerprint, probes, verdicts, alerts, prompt, response, n_tokens, flagged, steering.
`EventLog.record` returns only after its transaction is committed to disk, so an id the server
has handed to a client survives a crash of the server.

Threads: one connection shared by all threads, every use under one lock. SQLite serializes
writers anyway, and the reads the server makes are small pages of events, so a lock costs little
and keeps close() simple. `export` reads through a connection of its own, so a long export does
not hold up `record`. Other processes (the `probewatch events` command) may open the same file
at the same time: WAL lets them read while the server writes.
"""

import csv
import json
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from probewatch.errors import ProbewatchError
from probewatch.paths import atomic_text, cache_dir

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FORMATS = ("jsonl", "csv")
FIELDS = (
    "id",
    "created",
    "request_id",
    "model",
    "model_fingerprint",
    "probes",
    "verdicts",
    "alerts",
    "prompt",
    "response",
    "n_tokens",
    "flagged",
    "steering",
)
JSON_FIELDS = ("probes", "verdicts", "alerts", "prompt", "steering")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_TIMEOUT_S = 30.0  # another process (the CLI, an export) may hold the write lock briefly

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    request_id TEXT,
    model TEXT NOT NULL,
    model_fingerprint TEXT,
    probes TEXT NOT NULL,
    verdicts TEXT NOT NULL,
    alerts TEXT NOT NULL,
    prompt TEXT,
    response TEXT,
    n_tokens INTEGER NOT NULL,
    flagged INTEGER NOT NULL,
    steering TEXT
);
CREATE INDEX events_created ON events (created);
CREATE INDEX events_flagged ON events (flagged, created);
"""


def default_events_path() -> Path:
    """Where the server writes events and `probewatch events` reads them by default."""
    return cache_dir() / "events.sqlite"


class EventLog:
    """Append-only store of monitored responses; see the module docstring for threading."""

    def __init__(self, path: str | Path, store_text: bool = True) -> None:
        self.path = Path(path).expanduser()
        self.store_text = store_text
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = self._open()

    # -- opening -------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        _check_is_sqlite(self.path)
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Prompts and responses can be sensitive: owner-only. SQLite gives its -wal and -shm
            # files the same permissions as the database file.
            # (No O_TRUNC: if another process created it meanwhile, it is left as it is.)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,  # autocommit; transactions are explicit BEGIN/COMMIT
                check_same_thread=False,  # shared across threads under self._lock
            )
        except sqlite3.Error as exc:
            raise ProbewatchError(
                f"cannot open the event log {self.path}: {exc}",
                hint="check that the path is a file in a writable directory",
            ) from exc
        try:
            # Read before anything writes: a damaged file must fail here, untouched.
            version = _read_schema_version(conn, self.path)
            # WAL: readers (the dashboard, the CLI) never block the writer. synchronous=FULL: in
            # WAL mode, NORMAL only fsyncs at checkpoints, so a power loss could drop commits that
            # were already acknowledged; FULL fsyncs the WAL on every commit, so a commit that has
            # returned is on disk (as far as the OS and the drive honour fsync). fullfsync makes
            # macOS flush the drive's cache too; it is a no-op elsewhere.
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("event log %s: WAL unavailable, using journal mode %s", self.path, mode)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA fullfsync=ON")
            conn.execute("PRAGMA checkpoint_fullfsync=ON")
            if version is None:
                self._create_schema(conn)
        except ProbewatchError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise _damaged(self.path, exc) from exc
        return conn

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created it between our check and this lock.
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- writing -------------------------------------------------------------------------------

    def record(self, event: Mapping[str, Any]) -> str:
        """Validate and store one event; return its id once the commit is on disk.

        A missing id gets a uuid4 hex, a missing `created` the current time, a missing `flagged`
        whether any verdict flagged. With `store_text=False`, prompt and response are dropped.
        """
        row = validate_event(event)
        if not self.store_text:
            row["prompt"] = None
            row["response"] = None
        values = [_to_column(name, row[name]) for name in FIELDS]
        placeholders = ", ".join("?" for _ in FIELDS)
        with self._locked() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(
                        f"INSERT INTO events ({', '.join(FIELDS)}) VALUES ({placeholders})", values
                    )
                    conn.execute("COMMIT")  # the acknowledged point: synchronous=FULL fsyncs here
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.IntegrityError as exc:
                raise ProbewatchError(
                    f"event id {row['id']!r} is already in the event log",
                    hint="leave `id` out and a fresh one is assigned",
                ) from exc
            except sqlite3.DatabaseError as exc:
                raise _damaged(self.path, exc) from exc
        return str(row["id"])

    # -- reading -------------------------------------------------------------------------------

    def get(self, event_id: str) -> dict[str, Any] | None:
        """The event with this id, or None."""
        with self._locked() as conn:
            cur = conn.execute(f"SELECT {', '.join(FIELDS)} FROM events WHERE id = ?", (event_id,))
            found = cur.fetchone()
        return None if found is None else _from_row(found)

    def query(
        self,
        limit: int = 50,
        offset: int = 0,
        probe: str | None = None,
        flagged: bool | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict[str, Any]]:
        """Events newest first, `since <= created < until`.

        `probe` keeps events with a verdict for that probe; with `flagged` as well, the flag is
        that probe's verdict, otherwise it is the event's overall `flagged`.
        """
        where, params = _where(probe, flagged, since, until)
        page = _page(limit, offset)
        sql = f"SELECT {', '.join(FIELDS)} FROM events{where} {_ORDER}{page}"
        with self._locked() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_from_row(r) for r in rows]

    def count(
        self,
        probe: str | None = None,
        flagged: bool | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        """How many events `query` would return without a limit."""
        where, params = _where(probe, flagged, since, until)
        with self._locked() as conn:
            return int(conn.execute(f"SELECT count(*) FROM events{where}", params).fetchone()[0])

    def export(
        self,
        out: str | Path,
        fmt: str | None = None,
        *,
        limit: int | None = None,
        probe: str | None = None,
        flagged: bool | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        """Write the matching events (newest first) to `out`; return how many.

        `fmt` is "jsonl" or "csv", by default taken from the suffix of `out`. The file appears
        whole or not at all (temp file, fsync, rename); an existing file is replaced. CSV has one
        column per field, structured fields JSON-encoded, plus `verdict.<probe>.score` and
        `verdict.<probe>.flagged` for every probe that appears.
        """
        out = Path(out).expanduser()
        fmt = export_format(out, fmt)
        if out.resolve() in {self.path.resolve(), *_sidecars(self.path.resolve())}:
            raise ProbewatchError(f"{out} is the event log itself", hint="export to another file")
        self._connection()  # refuse after close(), like every other method
        where, params = _where(probe, flagged, since, until)
        selected = f"SELECT {', '.join(FIELDS)} FROM events{where} {_ORDER}{_page(limit, 0)}"
        # A private read connection: one snapshot for both passes, and no lock held while the
        # file is written, so the server keeps recording meanwhile.
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("BEGIN")  # a read transaction: both passes see the same events
            with atomic_text(out, newline="" if fmt == "csv" else None) as f:
                if fmt == "jsonl":
                    n = _write_jsonl(f, (_from_row(r) for r in conn.execute(selected, params)))
                else:
                    probes = [
                        r[0]
                        for r in conn.execute(
                            f"SELECT DISTINCT v.key FROM ({selected}) AS e, "
                            "json_each(e.verdicts) AS v ORDER BY v.key",
                            params,
                        )
                    ]
                    n = _write_csv(
                        f, (_from_row(r) for r in conn.execute(selected, params)), probes
                    )
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, exc) from exc
        finally:
            conn.close()
        return n

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (this also checkpoints the WAL). Safe to call twice."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventLog({str(self.path)!r}, store_text={self.store_text})"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ProbewatchError(
                f"the event log {self.path} is closed", hint="open a new EventLog"
            )
        return self._conn

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection()


# -- validation ----------------------------------------------------------------------------------


def validate_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """Check an event against the contract in docs/API.md; return it with defaults filled in.

    Raises ProbewatchError naming the first bad field.
    """
    if not isinstance(event, Mapping):
        raise ProbewatchError(f"an event must be a dict, not {type(event).__name__}")
    unknown = sorted(set(event) - set(FIELDS))
    if unknown:
        raise ProbewatchError(
            f"event has unknown field {unknown[0]!r}", hint=f"the fields are: {', '.join(FIELDS)}"
        )
    for name in ("model", "probes", "verdicts", "alerts", "n_tokens"):
        if name not in event:
            raise ProbewatchError(f"event field {name!r} is missing")
    row: dict[str, Any] = {name: event.get(name) for name in FIELDS}
    if row["id"] is None:
        row["id"] = uuid.uuid4().hex
    if row["created"] is None:
        row["created"] = time.time()

    _expect(isinstance(row["id"], str) and 0 < len(row["id"]) <= 200, "id", "a non-empty string")
    _expect(_is_number(row["created"]) and row["created"] >= 0, "created", "unix seconds (>= 0)")
    _expect(isinstance(row["model"], str) and row["model"] != "", "model", "a non-empty string")
    for name in ("request_id", "model_fingerprint", "response"):
        _expect(row[name] is None or isinstance(row[name], str), name, "a string or null")
    _expect(_is_int(row["n_tokens"]) and row["n_tokens"] >= 0, "n_tokens", "an integer >= 0")

    probes = row["probes"]
    _expect(isinstance(probes, dict), "probes", "an object {probe name: version}")
    for name, version in probes.items():
        ok = isinstance(name, str) and (isinstance(version, str) or _is_int(version))
        _expect(ok, f"probes.{name}", "a version string")

    verdicts = row["verdicts"]
    _expect(isinstance(verdicts, dict), "verdicts", "an object {probe name: verdict}")
    for name, verdict in verdicts.items():
        _check_verdict(name, verdict)

    alerts = row["alerts"]
    _expect(isinstance(alerts, list), "alerts", "a list of alerts")
    for i, alert in enumerate(alerts):
        _check_alert(i, alert)

    prompt = row["prompt"]
    _expect(prompt is None or isinstance(prompt, list), "prompt", "a list of messages or null")
    for i, message in enumerate(prompt or []):
        ok = (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        )
        _expect(ok, f"prompt[{i}]", 'a message {"role": str, "content": str}')

    steering = row["steering"]
    _expect(steering is None or isinstance(steering, dict), "steering", "an object or null")
    if row["flagged"] is None:
        row["flagged"] = any(v["flagged"] for v in verdicts.values())
    _expect(isinstance(row["flagged"], bool), "flagged", "true or false")

    for name in JSON_FIELDS:  # anything that would not survive a JSON round trip
        try:
            json.dumps(row[name], allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ProbewatchError(f"event field {name!r} is not valid JSON: {exc}") from exc
    return row


def _check_verdict(name: Any, verdict: Any) -> None:
    field = f"verdicts.{name}"
    _expect(isinstance(name, str) and name != "", "verdicts", "keyed by probe name")
    _expect(isinstance(verdict, dict), field, "an object with score, threshold, flagged")
    for key in ("score", "threshold"):
        _expect(_is_number(verdict.get(key)), f"{field}.{key}", "a finite number")
    _expect(isinstance(verdict.get("flagged"), bool), f"{field}.flagged", "true or false")
    first = verdict.get("first_alert_token")
    _expect(first is None or _is_int(first), f"{field}.first_alert_token", "an integer or null")


def _check_alert(i: int, alert: Any) -> None:
    field = f"alerts[{i}]"
    _expect(isinstance(alert, dict), field, "an object with probe, token_index, value, threshold")
    _expect(isinstance(alert.get("probe"), str), f"{field}.probe", "a probe name")
    _expect(_is_int(alert.get("token_index")), f"{field}.token_index", "an integer")
    for key in ("value", "threshold"):
        _expect(_is_number(alert.get(key)), f"{field}.{key}", "a finite number")


def _expect(ok: bool, field: str, what: str) -> None:
    if not ok:
        raise ProbewatchError(f"event field {field!r} must be {what}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


# -- rows and SQL --------------------------------------------------------------------------------

# rowid breaks ties in `created` by insertion order.
_ORDER = "ORDER BY created DESC, rowid DESC"


def _to_column(name: str, value: Any) -> Any:
    if name in JSON_FIELDS:
        return None if value is None else json.dumps(value, ensure_ascii=False, allow_nan=False)
    if name == "flagged":
        return int(value)
    return value


def _from_row(row: tuple[Any, ...]) -> dict[str, Any]:
    event = dict(zip(FIELDS, row, strict=True))
    for name in JSON_FIELDS:
        if event[name] is not None:
            event[name] = json.loads(event[name])
    event["flagged"] = bool(event["flagged"])
    return event


def _where(
    probe: str | None, flagged: bool | None, since: float | None, until: float | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if probe is not None:
        if not isinstance(probe, str) or not probe:
            raise ProbewatchError("probe filter must be a probe name")
        # json_each keys are the probe names, so names with dots or quotes need no escaping.
        verdict = "SELECT 1 FROM json_each(events.verdicts) AS v WHERE v.key = ?"
        if flagged is not None:
            verdict += " AND json_extract(v.value, '$.flagged') = ?"
        clauses.append(f"EXISTS ({verdict})")
        params.append(probe)
        if flagged is not None:
            params.append(int(flagged))
    elif flagged is not None:
        clauses.append("flagged = ?")
        params.append(int(flagged))
    for name, bound, op in (("since", since, ">="), ("until", until, "<")):
        if bound is not None:
            if not _is_number(bound):
                raise ProbewatchError(f"{name} must be unix seconds, not {bound!r}")
            clauses.append(f"created {op} ?")
            params.append(float(bound))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _page(limit: int | None, offset: int) -> str:
    if limit is not None and (not _is_int(limit) or limit < 0):
        raise ProbewatchError(f"limit must be an integer >= 0, not {limit!r}")
    if not _is_int(offset) or offset < 0:
        raise ProbewatchError(f"offset must be an integer >= 0, not {offset!r}")
    # Both are checked ints, so formatting them into SQL is safe.
    return f" LIMIT {-1 if limit is None else limit} OFFSET {offset}"


# -- files ---------------------------------------------------------------------------------------


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


def _sidecars(db: Path) -> list[Path]:
    return [db.with_name(db.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def _check_is_sqlite(path: Path) -> None:
    """Refuse, without touching it, anything at `path` that is not an SQLite database."""
    if path.is_dir():
        raise ProbewatchError(f"the event log path {path} is a directory", hint="pass a file path")
    if not path.exists():
        return
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise ProbewatchError(f"cannot read the event log {path}: {exc}") from exc
    # An empty file is what sqlite itself leaves for a new database; anything else must be one.
    if head and head != _SQLITE_MAGIC:
        raise ProbewatchError(
            f"{path} is not an SQLite database, so it is not a probewatch event log",
            hint="move the file aside or choose another path; probewatch leaves it as it is",
        )


def _read_schema_version(conn: sqlite3.Connection, path: Path) -> int | None:
    """The schema version of an existing log, None for a new (empty) database."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None
    if "meta" not in tables:
        raise ProbewatchError(
            f"{path} is an SQLite database but not a probewatch event log",
            hint="choose another path; probewatch leaves this file as it is",
        )
    found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        version = int(found[0]) if found else None
    except ValueError:
        version = None
    if version is None:
        raise ProbewatchError(f"{path} has no valid schema version", hint="the file is damaged")
    if version > SCHEMA_VERSION:
        raise ProbewatchError(
            f"{path} is an event log of schema version {version}; this probewatch reads up to "
            f"{SCHEMA_VERSION}",
            hint="upgrade probewatch, or point it at another file",
        )
    # Version 1 is the only one so far; an older version would be migrated here.
    return version


def _damaged(path: Path, exc: sqlite3.DatabaseError) -> ProbewatchError:
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return ProbewatchError(
            f"the event log {path} is locked: {exc}",
            hint="another process holds it; try again, or use another --db",
        )
    if "full" in str(exc):
        return ProbewatchError(f"the event log {path}: {exc}", hint="free some disk space")
    return ProbewatchError(
        f"the event log {path} cannot be used: {exc}",
        hint="it may be damaged: move it aside (probewatch does not delete it) and start a new one",
    )
