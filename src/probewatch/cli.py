"""The `probewatch` command: one CLI over the same functions the Python API exposes.

Each command's flags come from its config dataclass in `probewatch.config` (see
`probewatch.cli_args`); handlers build that config first, which checks every argument, then
read the data, and load the model last. A verb with its own module (`cli_<verb>.py`) has a
`register(subparsers)` function; add the module to VERB_MODULES.
"""

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from probewatch import __version__
from probewatch.cli_args import (
    add_command,
    add_config_args,
    config_from_args,
    data_and_model,
    load_model,
    print_json,
)
from probewatch.config import (
    DataSource,
    EvalSpec,
    HarvestSpec,
    ModelChoice,
    ProbeSpec,
    RunFlags,
)
from probewatch.errors import ProbewatchError
from probewatch.paths import refuse_to_replace

# Verbs that live in their own module, each with register(subparsers).
VERB_MODULES = (
    "probewatch.cli_serve",
    "probewatch.server.events_cli",
    "probewatch.cli_steer",
    "probewatch.cli_attribute",
    "probewatch.cli_organism",
    "probewatch.cli_compare",
    "probewatch.cli_demo",
)


def cmd_models(args: argparse.Namespace) -> None:
    from probewatch.models import list_models

    rows = list_models()
    if args.json:
        print_json(rows)
        return
    for row in rows:
        state = ("cached" if row["cached"] else "installed") if row["installed"] else "missing"
        print(f"{row['name']:24} {state:10} {row['description']}")
        print(f"{'':24} aliases: {', '.join(row['aliases'])}")
        if not row["installed"]:
            print(f"{'':24} install: {row['install']}")
    print("Also: any local model directory, or a hub id already in the local Hugging Face cache.")


def cmd_datasets(args: argparse.Namespace) -> None:
    from probewatch.data import GENERATED, dataset_names, load_dataset

    source = config_from_args(DataSource, args, dataset=args.name)
    if args.action in ("show", "export") and not args.name:
        raise ProbewatchError(f"`datasets {args.action}` needs a dataset name")
    if args.action == "export" and not args.out:
        raise ProbewatchError("`datasets export` needs --out FILE.jsonl")
    out = refuse_to_replace(args.out, args.overwrite) if args.action == "export" else None
    if args.name:
        load_dataset(args.name) if args.name not in GENERATED else None  # unknown names fail now
    loaded = load_model(config_from_args(ModelChoice, args)) if args.model else None
    if args.action == "list":
        summaries = [load_dataset(name, seed=source.seed).summary() for name in dataset_names()]
        if loaded is not None:
            summaries += [
                load_dataset(name, source.seed, model=loaded, limit=source.limit).summary()
                for name in GENERATED
            ]
        if args.json:
            print_json(summaries)
            return
        _print_dataset_table(summaries)
        if loaded is None:
            print(
                f"generated from the model's own answers (add --model default to build and "
                f"count; cached): {', '.join(GENERATED)}"
            )
        return
    dataset = load_dataset(args.name, source.seed, model=loaded, limit=source.limit)
    if out is not None:
        out.write_text(dataset.to_jsonl())
        print(f"wrote {len(dataset.examples)} examples to {out}")
        return
    card = dataset.describe()
    if args.json:
        print_json(card)
        return
    for key, value in card.items():
        print(f"{key:13} {value}")
    print("examples:")
    for example in dataset.examples[:4]:
        print(f"  [{int(example.label)}] {example.text}")


def _print_dataset_table(summaries: list[dict[str, Any]]) -> None:
    print(f"{'name':20} {'n':>6} {'train':>6} {'test':>6}  {'labels 0/1':11} hash")
    for s in summaries:
        splits = s["splits"]
        counts: dict[str, int] = {}
        for split in splits.values():  # a control set has only a test split
            for label, n in split["labels"].items():
                counts[label] = counts.get(label, 0) + n
        labels = "/".join(str(counts.get(k, 0)) for k in ("0", "1"))
        n_train, n_test = (splits.get(k, {}).get("n", 0) for k in ("train", "test"))
        print(f"{s['name']:20} {s['n']:6} {n_train:6} {n_test:6}  {labels:11} {s['hash']}")


# Handlers check their config and read their data before importing the model stack.


def cmd_harvest(args: argparse.Namespace) -> None:
    spec = config_from_args(HarvestSpec, args)
    dataset, loaded = data_and_model(spec, config_from_args(ModelChoice, args))
    from probewatch.store import harvest

    if spec.engine == "vllm":
        from probewatch.engines.vllm.harvest import harvest_vllm

        store = harvest_vllm(loaded, dataset, spec, progress=not args.quiet)
    else:
        store = harvest(loaded, dataset, spec, progress=not args.quiet)
    rows = sum(s["n_rows"] for s in store.manifest["shards"])
    print(f"stored {rows} rows x {len(store.sites)} sites in {store.path}")


def cmd_train(args: argparse.Namespace) -> None:
    spec = config_from_args(ProbeSpec, args)
    out = refuse_to_replace(args.out, args.overwrite, "a saved probe")  # before any work
    dataset, loaded = data_and_model(spec, config_from_args(ModelChoice, args))
    from probewatch.data.files import needs_split, split_by_group
    from probewatch.probes import save_probe
    from probewatch.training import train

    if needs_split(dataset):
        dataset = split_by_group(dataset, spec.seed)
        n_train, n_test = len(dataset.split("train")), len(dataset.split("test"))
        print(
            f"{dataset.name} has no {spec.split_column!r} column, so it was split "
            f"{dataset.card.split_rule.removeprefix('no split column: ')}: {n_train} train rows, "
            f"{n_test} test rows"
        )
    result = train(loaded, dataset, spec, progress=not args.quiet)
    save_probe(result.artifact, out, overwrite=args.overwrite)
    if args.json:
        print_json({"probe": str(out), "site": result.best_site, **result.metrics.to_dict()})
        return
    print(result.report())
    print(f"saved to {out}")


def cmd_eval(args: argparse.Namespace) -> None:
    spec = config_from_args(EvalSpec, args)
    spec.require()
    if spec.scores_out is not None:
        refuse_to_replace(spec.scores_out, args.overwrite)
    model = args.model or _card_model(spec.probe)
    dataset, loaded = data_and_model(spec, config_from_args(ModelChoice, args, model=model))
    from probewatch.probes import load_probe
    from probewatch.training.evaluate import evaluate, write_scores

    artifact = load_probe(spec.probe)
    evaluation = evaluate(artifact, loaded, dataset, spec, progress=not args.quiet)
    if spec.scores_out is not None:
        write_scores(evaluation, spec.scores_out)
    if args.json:
        print_json(
            {
                "probe": str(spec.probe),
                "dataset": dataset.name,
                "split": evaluation.split,
                "overrides": artifact.overrides,
                **evaluation.metrics.to_dict(),
            }
        )
        return
    for note in artifact.overrides:
        print(f"warning: {note}", file=sys.stderr)
    print(evaluation.report(spec.worst))
    if spec.scores_out is not None:
        print(f"wrote every row's score, label and prediction to {spec.scores_out}")


def _card_model(probe: Path) -> str:
    """The model a probe was trained on, read from its card without loading anything."""
    try:
        return str(json.loads((probe / "card.json").read_text())["model"]["name"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProbewatchError(
            f"{probe}/card.json does not name its model ({exc})",
            hint="pass --model, or train the probe again",
        ) from exc


def cmd_report(args: argparse.Namespace) -> None:
    """Train (cached), then write the HTML + JSON report with every check."""
    from probewatch.data import FAMILIES, load_dataset

    spec = config_from_args(ProbeSpec, args)
    refuse_to_replace(args.out, args.overwrite, "a report")
    names = args.generalize.split(",") if args.generalize else FAMILIES["truth"]
    if spec.dataset not in FAMILIES["truth"] and not args.generalize:
        names = []
    dataset, loaded = data_and_model(spec, config_from_args(ModelChoice, args))
    from probewatch.reports.generalization import combine
    from probewatch.reports.report import build_report
    from probewatch.training import train

    others = [load_dataset(n.strip(), spec.seed, model=loaded) for n in names if n.strip()]
    if others and args.both_forms:
        # The fix for negation: one probe trained on affirmative and negated forms together.
        pairs = [d for d in others if d.name in (dataset.name, f"neg_{dataset.name}")]
        if len(pairs) == 2:
            others.append(combine(pairs, f"{dataset.name}+neg_{dataset.name}"))
    result = train(loaded, dataset, spec, progress=not args.quiet)
    command = "probewatch " + " ".join(sys.argv[1:]) if sys.argv[1:] else "probewatch report"
    report = build_report(loaded, dataset, result, others, command=command, progress=not args.quiet)
    page, data = report.save(args.out)
    print(f"best site {result.summary()}")
    print(f"wrote {page} and {data}")


def cmd_families(args: argparse.Namespace) -> None:
    """A probe per binary dataset family: the held-out AUROC table."""
    from probewatch.reports.families import (
        BINARY_FAMILIES,
        as_rows,
        evaluate_families,
        family_details,
    )

    names = args.datasets.split(",") if args.datasets else list(BINARY_FAMILIES)
    unknown = [n for n in names if n not in BINARY_FAMILIES]
    if unknown:
        raise ProbewatchError(
            f"not a binary family: {', '.join(unknown)}", hint=f"use {', '.join(BINARY_FAMILIES)}"
        )
    loaded = load_model(config_from_args(ModelChoice, args))
    results = evaluate_families(loaded, names, args.sites, args.limit, not args.quiet)
    if args.json:
        print_json(as_rows(results))
        return
    print(
        f"{'dataset':22} {'train':>5} {'test':>5} {'positions':9} {'site':9} "
        f"{'AUROC (95% CI)':22} recall@1%FPR"
    )
    for r in results:
        if r.note:
            print(f"{r.dataset:22} {r.n_train:5} {r.n_test:5} {r.positions:9} -  {r.note}")
            continue
        print(
            f"{r.dataset:22} {r.n_train:5} {r.n_test:5} {r.positions:9} {r.site:9} "
            f"{r.auroc:.3f} ({r.ci_low:.3f}-{r.ci_high:.3f})    {r.recall_at_1pct_fpr:.3f}"
        )
        print(f"{'':22} {family_details(r)}")


def _flags(p: argparse.ArgumentParser, *names: str) -> None:
    add_config_args(p, RunFlags, only=names)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probewatch", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"probewatch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = add_command(sub, "models", cmd_models, "list embedded models and whether they are cached")
    _flags(p, "json")

    p = add_command(sub, "datasets", cmd_datasets, "list, show or export built-in datasets")
    p.add_argument("action", choices=["list", "show", "export"], nargs="?", default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("--out", type=Path, help="export: output .jsonl file")
    add_config_args(p, ModelChoice, defaults={"model": None})
    add_config_args(p, DataSource, only=("seed", "limit"))
    _flags(p, "overwrite", "json")

    p = add_command(sub, "harvest", cmd_harvest, "stream activations of a dataset to a store")
    add_config_args(p, ModelChoice)
    add_config_args(p, HarvestSpec)
    _flags(p, "quiet")

    p = add_command(sub, "train", cmd_train, "sweep sites, train the best probe, save it")
    add_config_args(p, ModelChoice)
    p.add_argument("--out", type=Path, required=True, help="probe directory to create")
    add_config_args(p, ProbeSpec)
    _flags(p, "overwrite", "quiet", "json")

    p = add_command(sub, "eval", cmd_eval, "evaluate a saved probe on a dataset or your own file")
    add_config_args(p, EvalSpec, only=("probe",))
    add_config_args(p, ModelChoice, defaults={"model": None})
    add_config_args(p, EvalSpec)
    _flags(p, "overwrite", "quiet", "json")

    p = add_command(sub, "report", cmd_report, "train and write an HTML + JSON report")
    add_config_args(p, ModelChoice)
    add_config_args(
        p,
        ProbeSpec,
        only=("dataset", "sites", "control", "target_fpr", "seed"),
        defaults={"dataset": "cities"},
    )
    p.add_argument(
        "--generalize",
        help="comma list of datasets for the generalization matrix "
        "(default: the truth family when the dataset is in it)",
    )
    p.add_argument(
        "--both-forms",
        action="store_true",
        help="also train on the dataset and its negated form together",
    )
    p.add_argument("--out", type=Path, default=Path("reports/cities"), help="report directory")
    _flags(p, "overwrite", "quiet")

    p = add_command(sub, "families", cmd_families, "train a probe on each binary dataset family")
    add_config_args(p, ModelChoice)
    p.add_argument("--datasets", help="comma list (default: every binary family)")
    add_config_args(
        p,
        ProbeSpec,
        only=("sites", "limit"),
        defaults={"sites": "resid.10,resid.15,resid.19,resid.24"},
    )
    _flags(p, "quiet", "json")

    for module in VERB_MODULES:
        importlib.import_module(module).register(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # transformers is chatty at WARNING about things users cannot act on here.
    logging.getLogger("transformers").setLevel(logging.ERROR)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except ProbewatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished shards are kept and the next run resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
