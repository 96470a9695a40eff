"""`probewatch events`: list, filter and export the event log the server writes.

The main CLI calls `add_events_parser(subparsers)`; the handler raises ProbewatchError for bad
input, which the main CLI prints.
"""

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from probewatch.cli_args import add_config_args
from probewatch.config import RunFlags
from probewatch.errors import ProbewatchError

DEFAULT_LIMIT = 50  # as GET /v1/events


def add_events_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `events` on the main CLI's subparsers; return its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "events", help="list, filter or export monitored responses from the event log"
    )
    # The event log modules load pydantic: imported by the handler, so parsing stays quick.
    p.add_argument("--db", help="event log file (default: events.sqlite in the user cache)")
    p.add_argument(
        "--limit",
        type=int,
        help=f"at most this many events, newest first (default: {DEFAULT_LIMIT}; all for --export)",
    )
    p.add_argument("--probe", help="only events with a verdict from this probe")
    flag = p.add_mutually_exclusive_group()
    flag.add_argument(
        "--flagged",
        dest="flagged",
        action="store_const",
        const=True,
        default=None,
        help="only flagged events (by --probe, if given)",
    )
    flag.add_argument(
        "--not-flagged", dest="flagged", action="store_const", const=False, help="only unflagged"
    )
    p.add_argument("--since", help="from this time on: ISO date/time (local) or unix seconds")
    p.add_argument("--until", help="before this time: ISO date/time (local) or unix seconds")
    p.add_argument("--export", metavar="FILE", help="write the events to FILE instead")
    p.add_argument("--format", help="export format, jsonl or csv (default: from the FILE suffix)")
    add_config_args(p, RunFlags, only=("overwrite", "json"))
    p.set_defaults(func=cmd_events)
    return p


def cmd_events(args: argparse.Namespace) -> None:
    from probewatch.server.events import EventFilter, EventLog, default_events_path
    from probewatch.server.export import export_events, export_format

    db = Path(args.db).expanduser() if args.db else default_events_path()
    if not db.exists():
        # Listing must not create an empty log as a side effect.
        raise ProbewatchError(
            f"no event log at {db}",
            hint="`probewatch serve` writes one as it answers requests; or pass --db FILE",
        )
    if args.limit is not None and args.limit < 1:
        raise ProbewatchError(f"--limit must be at least 1, not {args.limit}")
    if args.format and not args.export:
        raise ProbewatchError("--format applies to --export", hint="add --export FILE")
    if args.export and args.json:
        raise ProbewatchError("--json and --export do not go together", hint="choose one")
    where = EventFilter(
        probe=args.probe,
        flagged=args.flagged,
        since=parse_time(args.since, "--since"),
        until=parse_time(args.until, "--until"),
    )
    with EventLog(db) as events:
        if args.export:
            out = Path(args.export).expanduser()
            fmt = export_format(out, args.format)  # check before anything is written
            if out.exists() and not args.overwrite:
                raise ProbewatchError(f"{out} exists", hint="choose another file or --overwrite")
            n = export_events(events, out, fmt, where, limit=args.limit)
            _say(f"wrote {n} events to {out}")
            return
        rows = events.query(where, limit=args.limit or DEFAULT_LIMIT)
        total = events.count(where)
    if args.json:
        _say(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    _say(format_table(rows))
    _say(
        f"{len(rows)} of {total} events" + (" (use --limit for more)" if total > len(rows) else "")
    )


def parse_time(text: str | None, option: str) -> float | None:
    """Unix seconds from unix seconds or an ISO date/time (naive ones are local time)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = text.strip()
        if stamp.endswith(("Z", "z")):  # fromisoformat in 3.11 does accept Z, but be explicit
            stamp = stamp[:-1] + "+00:00"
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        raise ProbewatchError(
            f"{option} {text!r} is not a time",
            hint="use an ISO date such as 2025-01-31 or 2025-01-31T14:00, or unix seconds",
        ) from None


def format_table(rows: list[dict[str, Any]]) -> str:
    """time, id prefix, model, flagged probes and the start of the response, one line each."""
    if not rows:
        return "no events"
    lines = [f"{'time':19}  {'id':8}  {'model':20}  {'flagged':16}  response"]
    for e in rows:
        when = datetime.fromtimestamp(e["created"]).strftime("%Y-%m-%d %H:%M:%S")
        flagged = ",".join(name for name, v in e["verdicts"].items() if v.get("flagged")) or "-"
        text = e["response"]
        shown = "(not stored)" if text is None else _printable(text)[:60]
        lines.append(
            f"{when:19}  {e['id'][:8]:8}  {_clip(e['model'], 20):20}  {_clip(flagged, 16):16}  "
            f"{shown}"
        )
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    text = _printable(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _printable(text: str) -> str:
    """One line, without control characters: model output must not drive the terminal."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _say(text: str) -> None:
    # sys.stdout looked up at call time, so pytest's capture sees it; the library has no print().
    sys.stdout.write(text + "\n")


def register(subparsers: Any) -> None:
    add_events_parser(subparsers)
