"""A probe whose card's shortcut audit says "likely shortcut" is not served unless the server
is told to serve shortcuts: at start-up it is skipped with the reason, and an upload of one is
refused."""

import json
from pathlib import Path

import pytest

from probewatch.errors import ProbewatchError
from probewatch.metrics.shortcuts import ShortcutAudit
from probewatch.server.registry import ProbeRegistry
from tests.helpers import FakeProbe, make_probes, tiny_model

PROBES = {"harm": FakeProbe("resid.1", scope="prompt"), "truth": FakeProbe("resid.1")}
SHORTCUT = ShortcutAudit(probe_auroc=0.95, baseline_auroc=0.94).to_dict()
PASSES = ShortcutAudit(probe_auroc=0.95, baseline_auroc=0.60).to_dict()


def _with_audit(path: Path, audit: dict[str, object]) -> None:
    card = json.loads((path / "card.json").read_text())
    card["shortcut_audit"] = audit
    (path / "card.json").write_text(json.dumps(card))


def test_a_likely_shortcut_is_skipped_with_its_reason_unless_forced(tmp_path: Path) -> None:
    loaded = tiny_model()
    make_probes(loaded, tmp_path, PROBES)
    _with_audit(tmp_path / "harm", SHORTCUT)
    _with_audit(tmp_path / "truth", PASSES)
    registry = ProbeRegistry(tmp_path, loaded)
    assert "harm" not in registry.probes and "truth" in registry.probes
    reason = registry.skipped["harm"]
    assert "likely a shortcut" in reason and "0.940" in reason and "0.95" in reason
    forced = ProbeRegistry(tmp_path, loaded, serve_shortcuts=True)
    assert {"harm", "truth"} <= set(forced.probes) and not forced.skipped


def test_an_upload_of_a_likely_shortcut_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    loaded = tiny_model()
    source = tmp_path / "source"
    make_probes(loaded, source, PROBES)
    _with_audit(source / "harm", SHORTCUT)
    served = tmp_path / "served"
    registry = ProbeRegistry(served, loaded)
    card, weights = (
        (source / "harm" / "card.json").read_bytes(),
        (source / "harm" / "weights.safetensors").read_bytes(),
    )
    with pytest.raises(ProbewatchError, match="likely a shortcut") as caught:
        registry.add("harm", card, weights)
    assert "--serve-shortcuts" in (caught.value.hint or "")
    assert not (served / "harm").exists() and not list(served.iterdir())


def test_a_span_probe_is_served_with_a_warning_that_it_reads_every_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = tiny_model()
    make_probes(loaded, tmp_path, PROBES)
    card = json.loads((tmp_path / "truth" / "card.json").read_text())
    (tmp_path / "truth" / "card.json").write_text(json.dumps({**card, "positions": "span"}))
    with caplog.at_level("WARNING", logger="probewatch.server.registry"):
        registry = ProbeRegistry(tmp_path, loaded)
    assert "truth" in registry.probes  # served, not refused
    warned = [r.getMessage() for r in caplog.records if "span tokens only" in r.getMessage()]
    assert len(warned) == 1 and "truth" in warned[0]  # the prompt-scope harm probe is not named
