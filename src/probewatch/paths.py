"""Where probewatch keeps its caches, and how it writes files so that nothing is half-written."""

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from probewatch.errors import ProbewatchError


def refuse_to_replace(
    target: str | Path, overwrite: bool, what: str = "it", instead: str = "--out"
) -> Path:
    """`target` as a Path, or a clear error if it exists and `overwrite` was not given: nothing
    a user saved is replaced by accident. Callers check before any long work starts."""
    path = Path(target)
    if path.exists() and not overwrite:
        raise ProbewatchError(
            f"{path} already exists; refusing to replace {what}",
            hint=f"choose another {instead}, or pass --overwrite",
        )
    return path


def cache_dir() -> Path:
    """$PROBEWATCH_CACHE, else $XDG_CACHE_HOME/probewatch, else ~/.cache/probewatch."""
    if env := os.environ.get("PROBEWATCH_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "probewatch"


@contextmanager
def atomic_text(path: Path, newline: str | None = None) -> Iterator[IO[str]]:
    """A text file that appears at `path` whole, or not at all: a reader sees either the old
    file or the complete new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_text(path) as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


@contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a scratch directory that becomes `target` only if the block finishes.

    An interrupted write leaves `target` as it was. With `overwrite`, an existing target is
    swapped out only after the new one is complete, so the user never ends up with neither.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        raise FileExistsError(str(target))
    clean_stale_scratch(target.parent)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=scratch_prefix(target.name)))
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, backup)
        os.replace(scratch, target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(scratch, target)


_SCRATCH = re.compile(r"^\..+\.(?:partial|old)-(\d+)(?:-|$)")


def scratch_prefix(name: str) -> str:
    """Prefix of a scratch directory for `name`; it records our pid, so a later process can
    tell a crashed write's leftovers (pid gone) from a write still under way."""
    return f".{name}.partial-{os.getpid()}-"


def clean_stale_scratch(root: Path) -> list[str]:
    """Remove scratch directories in `root` left by processes that no longer run (a write
    killed half-way); return their names. Those of live processes are left alone."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for path in root.iterdir():
        found = _SCRATCH.match(path.name)
        if found and path.is_dir() and not _alive(int(found.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return sorted(removed)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
