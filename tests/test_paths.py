"""Scratch directories: a crashed write's leftovers are found and removed, live ones kept."""

import os
from pathlib import Path

from probewatch.paths import atomic_directory, clean_stale_scratch


def test_stale_scratch_of_live_processes_is_kept(tmp_path: Path) -> None:
    mine = tmp_path / f".x.partial-{os.getpid()}-abc"
    dead = tmp_path / ".x.partial-999999999-abc"
    user = tmp_path / "x.partial-1-keep"  # not ours: no leading dot
    for path in (mine, dead, user):
        path.mkdir()
    assert clean_stale_scratch(tmp_path) == [dead.name]
    assert mine.exists() and user.exists()


def test_a_killed_write_leaves_nothing_loadable_and_is_cleaned_next_time(tmp_path: Path) -> None:
    stale = tmp_path / ".out.partial-999999999-xyz"
    stale.mkdir()
    (stale / "card.json").write_text("{}")
    with atomic_directory(tmp_path / "out") as scratch:
        assert scratch.name.startswith(f".out.partial-{os.getpid()}-")
        (scratch / "card.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
