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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from probewatch.errors import ProbewatchError
from probewatch.paths import cache_dir
from probewatch.server.schemas import Event

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: finish_reason (a cancelled response says so)
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
    "finish_reason",
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
    steering TEXT,
    finish_reason TEXT
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
            raise damaged(self.path, exc) from exc
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
                raise damaged(self.path, exc) from exc
        return str(row["id"])

    # -- reading -------------------------------------------------------------------------------

    def get(self, event_id: str) -> dict[str, Any] | None:
        """The event with this id, or None."""
        with self._locked() as conn:
            cur = conn.execute(f"SELECT {', '.join(FIELDS)} FROM events WHERE id = ?", (event_id,))
            found = cur.fetchone()
        return None if found is None else from_row(found)

    def query(
        self, where: "EventFilter | None" = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Events newest first that pass `where` (see EventFilter)."""
        clause, params = (where or EventFilter()).sql()
        sql = f"SELECT {', '.join(FIELDS)} FROM events{clause} {ORDER}{page(limit, offset)}"
        with self._locked() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [from_row(r) for r in rows]

    def count(self, where: "EventFilter | None" = None) -> int:
        """How many events `query` would return without a limit."""
        clause, params = (where or EventFilter()).sql()
        with self._locked() as conn:
            return int(conn.execute(f"SELECT count(*) FROM events{clause}", params).fetchone()[0])

    def check_writable(self) -> None:
        """Write and commit a heartbeat row; raise ProbewatchError if the log cannot take a
        write (full disk, read-only file), as `record` would."""
        with self._locked() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_write_check', ?)",
                    (repr(time.time()),),
                )
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise damaged(self.path, exc) from exc

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

    def reader(self) -> sqlite3.Connection:
        """A private read-only connection to the same file (exports: no lock held)."""
        self._connection()  # refuse after close(), like every other method
        return sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)

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
    """Check an event against the contract (schemas.Event); return it with defaults filled in:
    a missing id gets a uuid4 hex, a missing `created` the current time, a missing `flagged`
    whether any verdict flagged. Raises ProbewatchError naming the first bad field."""
    if not isinstance(event, Mapping):
        raise ProbewatchError(f"an event must be a dict, not {type(event).__name__}")
    row = dict(event)
    row.setdefault("id", None)
    row["id"] = row["id"] if row["id"] is not None else uuid.uuid4().hex
    row["created"] = row.get("created") if row.get("created") is not None else time.time()
    if row.get("flagged") is None:
        verdicts = row.get("verdicts")
        row["flagged"] = isinstance(verdicts, Mapping) and any(
            isinstance(v, Mapping) and v.get("flagged") is True for v in verdicts.values()
        )
    try:
        checked = Event.model_validate(row, strict=True)
    except ValidationError as exc:
        raise _field_error(exc) from exc
    return checked.model_dump()


def _field_error(exc: ValidationError) -> ProbewatchError:
    first = exc.errors()[0]
    where = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]
    ).lstrip(".")
    if first["type"] == "missing":
        return ProbewatchError(f"event field {where!r} is missing")
    if first["type"] == "extra_forbidden":
        return ProbewatchError(
            f"event has unknown field {where!r}", hint=f"the fields are: {', '.join(FIELDS)}"
        )
    return ProbewatchError(f"event field {where!r}: {first['msg']}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


# -- rows and SQL --------------------------------------------------------------------------------

# rowid breaks ties in `created` by insertion order.
ORDER = "ORDER BY created DESC, rowid DESC"


def _to_column(name: str, value: Any) -> Any:
    if name in JSON_FIELDS:
        return None if value is None else json.dumps(value, ensure_ascii=False, allow_nan=False)
    if name == "flagged":
        return int(value)
    return value


def from_row(row: tuple[Any, ...]) -> dict[str, Any]:
    event = dict(zip(FIELDS, row, strict=True))
    for name in JSON_FIELDS:
        if event[name] is not None:
            event[name] = json.loads(event[name])
    event["flagged"] = bool(event["flagged"])
    return event


@dataclass(frozen=True)
class EventFilter:
    """Which events to read: `since <= created < until`; `probe` keeps events with a verdict
    for that probe; with `flagged` as well, the flag is that probe's verdict, otherwise it is
    the event's overall `flagged`."""

    probe: str | None = None
    flagged: bool | None = None
    since: float | None = None
    until: float | None = None

    def sql(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        probe, flagged = self.probe, self.flagged
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
        for name, bound, op in (("since", self.since, ">="), ("until", self.until, "<")):
            if bound is not None:
                if not _is_number(bound):
                    raise ProbewatchError(f"{name} must be unix seconds, not {bound!r}")
                clauses.append(f"created {op} ?")
                params.append(float(bound))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def page(limit: int | None, offset: int) -> str:
    if limit is not None and (not _is_int(limit) or limit < 0):
        raise ProbewatchError(f"limit must be an integer >= 0, not {limit!r}")
    if not _is_int(offset) or offset < 0:
        raise ProbewatchError(f"offset must be an integer >= 0, not {offset!r}")
    # Both are checked ints, so formatting them into SQL is safe.
    return f" LIMIT {-1 if limit is None else limit} OFFSET {offset}"


# -- files ---------------------------------------------------------------------------------------


def sidecars(db: Path) -> list[Path]:
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
    if version == 1:  # 1 -> 2: a column for finish_reason, null for the old rows
        conn.execute("BEGIN IMMEDIATE")
        columns = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
        if "finish_reason" not in columns:
            conn.execute("ALTER TABLE events ADD COLUMN finish_reason TEXT")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(2),))
        conn.execute("COMMIT")
        version = 2
    return version


def damaged(path: Path, exc: sqlite3.DatabaseError) -> ProbewatchError:
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
