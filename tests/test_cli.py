"""The CLI over the same functions as the API: happy paths on a tiny model, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from probewatch.cli import main
from tests.helpers import tiny_model


@pytest.fixture
def tiny_dir(tmp_path: Path) -> str:
    tiny = tiny_model()
    tiny.model.save_pretrained(tmp_path / "tiny")
    tiny.tokenizer.save_pretrained(tmp_path / "tiny")
    return str(tmp_path / "tiny")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_eval_on_a_user_csv(tiny_dir: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    probe = tmp_path / "probe"
    code, out, _ = run(
        [
            "train",
            "--model",
            tiny_dir,
            "--dataset",
            "cities",
            "--sites",
            "resid.0-1",
            "--out",
            str(probe),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, out
    assert "resid.0" in out and "resid.1" in out and "best" in out
    assert (probe / "card.json").is_file() and (probe / "weights.safetensors").is_file()

    data = tmp_path / "mine.csv"
    data.write_text(
        "sentence,truth\nThe city of Paris is in France.,yes\nThe city of Paris is in Peru.,no\n"
        "The city of Lima is in Peru.,true\nThe city of Lima is in Chile.,false\n"
    )
    code, out, _ = run(
        [
            "eval",
            str(probe),
            "--model",
            tiny_dir,
            "--file",
            str(data),
            "--text-column",
            "sentence",
            "--label-column",
            "truth",
            "--json",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    result = json.loads(out)
    assert result["n"] == 4 and result["n_positive"] == 2 and 0.0 <= result["auroc"] <= 1.0


def test_a_files_spans_column_makes_a_span_probe(tiny_dir: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rows = []
    for i in range(60):
        entity = ["Lima", "Rome"][i % 2]
        answer = f"Number {i} is in {entity}."
        chat = [
            {"role": "user", "content": f"Where is {i}?"},
            {"role": "assistant", "content": answer},
        ]
        start = answer.index(entity)
        rows.append({"messages": chat, "label": i % 2, "spans": [[start, start + 4]], "group": i})
    data = tmp_path / "answers.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    probe = tmp_path / "probe"
    argv = ["train", "--model", tiny_dir, "--file", str(data), "--sites", "resid.1"]
    code, out, _ = run(
        [*argv, "--out", str(probe), "--no-shortcut-audit", "--json", "--quiet"], capsys
    )
    assert code == 0, out
    assert out.startswith("answers.jsonl has no 'split' column, so it was split by group")
    result = json.loads(out[out.index("{") :])
    assert set(result["span"]) >= {"max", "mean", "n_examples"}
    assert json.loads((probe / "card.json").read_text())["positions"] == "span"


def test_train_refuses_to_replace_a_saved_probe_before_doing_any_work(
    tiny_dir: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "card.json").write_text("{}")
    code, _, err = run(
        [
            "train",
            "--model",
            "no/such-model",
            "--dataset",
            "cities",
            "--out",
            str(tmp_path / "probe"),
        ],
        capsys,
    )
    assert code == 2 and "already exists" in err
    assert (tmp_path / "probe" / "card.json").read_text() == "{}"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["train", "--model", "no/such-model", "--dataset", "cities", "--out", "{tmp}/p"],
            "not available offline",
        ),
        (
            ["train", "--model", "{tiny}", "--dataset", "nope", "--out", "{tmp}/p"],
            "unknown dataset",
        ),
        (
            [
                "train",
                "--model",
                "{tiny}",
                "--dataset",
                "cities",
                "--sites",
                "resid.9",
                "--out",
                "{tmp}/p",
            ],
            "out of range",
        ),
        (
            [
                "train",
                "--model",
                "{tiny}",
                "--dataset",
                "cities",
                "--sites",
                "layer3",
                "--out",
                "{tmp}/p",
            ],
            "unknown site",
        ),
        (["eval", "{tmp}/missing", "--dataset", "cities"], "no probe directory"),
        (["datasets", "show", "nope"], "unknown dataset"),
        (
            [
                "harvest",
                "--model",
                "{tiny}",
                "--file",
                "{tmp}/one.csv",
                "--out",
                "{tmp}/s",
                "--label-column",
                "y",
            ],
            "no column 'y'",
        ),
    ],
)
def test_bad_input_gets_one_clear_message_and_exit_2(
    argv: list[str],
    fragment: str,
    tiny_dir: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "one.csv").write_text("text,label\nhello,1\n")
    code, _, err = run([a.format(tmp=tmp_path, tiny=tiny_dir) for a in argv], capsys)
    assert code == 2
    assert err.startswith("error: ") and fragment in err
    assert "Traceback" not in err


def test_one_class_and_malformed_files_name_the_problem(
    tmp_path: Path, tiny_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from probewatch.probes import save_probe
    from tests.helpers import probe_artifact

    probe = tmp_path / "p"
    save_probe(probe_artifact(tiny_model()), probe)
    cases = {
        "one.csv": ("text,label\na,1\nb,1\n", "only one class"),
        "bad.jsonl": (
            '{"text": "a", "label": 1}\n{"text": "b", "label": \n',
            "line 2: not valid JSON",
        ),
        "odd.csv": ("text,label\na,1\nb,maybe\n", "line 3: label 'maybe'"),
        "empty.csv": ("text,label\n", "has no rows"),
        "data.xlsx": ("", "unknown file type"),
    }
    for name, (content, fragment) in cases.items():
        (tmp_path / name).write_text(content)
        code, _, err = run(
            ["eval", str(probe), "--model", tiny_dir, "--file", str(tmp_path / name)], capsys
        )
        assert code == 2, name
        assert fragment in err, (name, err)


def test_models_and_datasets_listings(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "smollm2-135m-instruct" in out and "gemma3-270m" in out
    code, out, _ = run(["datasets", "list", "--json"], capsys)
    names = {row["name"]: row for row in json.loads(out)}
    assert names["cities"]["splits"]["test"]["n"] > 0
    code, out, _ = run(["datasets", "show", "cities"], capsys)
    assert "GeoNames" in out and "CC-BY" in out


def test_the_installed_entry_point_runs_without_a_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "probewatch.cli", "eval", "/nonexistent", "--dataset", "cities"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no probe directory" in result.stderr and "Traceback" not in result.stderr


def test_generated_datasets_are_named_and_need_a_model(capsys) -> None:  # type: ignore[no-untyped-def]
    from probewatch.data import GENERATED
    from probewatch.data.generated import GENERATED_BUILDERS

    assert set(GENERATED) == set(GENERATED_BUILDERS)
    code, out, _ = run(["datasets", "list"], capsys)
    assert code == 0 and "knowledge_qa" in out
    code, _, err = run(["datasets", "show", "deception_told_to_lie"], capsys)
    assert code == 2 and "--model" in err


FAST_FAIL = [
    (["train", "--dataset", "mine.csv", "--out", "{tmp}/p"], "--file mine.csv"),
    (["train", "--file", "{tmp}/missing.csv", "--out", "{tmp}/p"], "no such file"),
    (["train", "--file", "{tmp}/one.csv", "--label-column", "y", "--out", "{tmp}/p"], "'y'"),
    (["train", "--dataset", "nope", "--out", "{tmp}/p"], "unknown dataset"),
    (["train", "--dataset", "cities", "--target-fpr", "2", "--out", "{tmp}/p"], "target_fpr"),
    (["train", "--dataset", "cities", "--aggregator", "max:w", "--out", "{tmp}/p"], "bad option"),
    (["harvest", "--dataset", "cities", "--limit", "0"], "limit must be at least 1"),
    (["eval", "{tmp}/missing", "--dataset", "cities"], "no probe directory"),
    (["serve", "--probes", "{tmp}/nowhere"], "no probe directory"),
    (["serve", "--port", "70000"], "out of range"),
    (["steer", "try", "{tmp}", "--mode", "gated", "--prompt", "hi"], "needs the probe"),
    (["audit", "{tmp}", "--probes", "{tmp}/nowhere", "--out", "{tmp}/a"], "not a probe directory"),
    (["demo", "--port", "{port}"], "cannot listen"),
]


@pytest.mark.parametrize(("argv", "fragment"), FAST_FAIL)
def test_bad_arguments_fail_fast_without_loading_a_model(
    argv: list[str], fragment: str, tmp_path: Path
) -> None:
    """Checked before the model loads: no torch import, exit 2, one clear line, and the
    checks themselves take well under 2 s (interpreter start-up aside)."""
    import socket

    (tmp_path / "one.csv").write_text("text,label\nhello,1\nbye,0\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        filled = [a.format(tmp=tmp_path, port=busy.getsockname()[1]) for a in argv]
        code = (
            "import sys, time\n"
            "from probewatch.cli import main\n"
            "start = time.perf_counter()\n"
            f"code = main({filled!r})\n"
            "took = time.perf_counter() - start\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print(f'took {took:.3f}')\n"
            "sys.exit(code)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 2, done.stderr
    assert fragment in done.stderr and "Traceback" not in done.stderr
    took = float(done.stdout.split("took ")[1])
    assert took < 2.0, took
