"""The `probewatch` command: one CLI over the same functions the Python API exposes."""

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from probewatch import __version__
from probewatch.cli_args import add_config_args, config_from_args
from probewatch.config import ServerConfig
from probewatch.errors import ProbewatchError
from probewatch.paths import refuse_to_replace

DEMO_DIR = Path("runs/demo")
# Verbs that live in their own module `cli_<verb>.py`, each with register(subparsers).
VERB_MODULES = (
    "probewatch.server.events_cli",
    "probewatch.cli_steer",
    "probewatch.cli_attribute",
    "probewatch.cli_organism",
    "probewatch.cli_compare",
)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def cmd_models(args: argparse.Namespace) -> None:
    from probewatch.models import list_models

    rows = list_models()
    if args.json:
        _print_json(rows)
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

    loaded = _load_model(args.model, args.device) if args.model else None
    if args.action == "list":
        summaries = [load_dataset(name, seed=args.seed).summary() for name in dataset_names()]
        if loaded is not None:
            summaries += [
                load_dataset(name, args.seed, model=loaded, limit=args.limit).summary()
                for name in GENERATED
            ]
        if args.json:
            _print_json(summaries)
            return
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
        if loaded is None:
            print(
                f"generated from the model's own answers (add --model default to build and "
                f"count; cached): {', '.join(GENERATED)}"
            )
        return
    if not args.name:
        raise ProbewatchError(f"`datasets {args.action}` needs a dataset name")
    dataset = load_dataset(args.name, seed=args.seed, model=loaded, limit=args.limit)
    if args.action == "show":
        card = dataset.describe()
        if args.json:
            _print_json(card)
            return
        for key, value in card.items():
            print(f"{key:13} {value}")
        print("examples:")
        for example in dataset.examples[:4]:
            print(f"  [{int(example.label)}] {example.text}")
    elif args.action == "export":
        if not args.out:
            raise ProbewatchError("`datasets export` needs --out FILE.jsonl")
        out = refuse_to_replace(args.out, args.overwrite)
        out.write_text(dataset.to_jsonl())
        print(f"wrote {len(dataset.examples)} examples to {out}")


def _load_model(spec: str, device: str | None) -> Any:
    from transformers.utils import logging as hf_logging

    from probewatch.models import load_model

    hf_logging.disable_progress_bar()  # per-tensor bars drown out what the user asked for

    logging.getLogger(__name__).info("loading model %s", spec)
    return load_model(spec, device=device)


def cmd_harvest(args: argparse.Namespace) -> None:
    from probewatch.data import load_dataset
    from probewatch.store import harvest

    loaded = _load_model(args.model, args.device)
    dataset = load_dataset(
        args.dataset,
        args.seed,
        args.text_column,
        args.label_column,
        model=loaded,
        limit=args.limit,
    )
    options = {
        "positions": args.positions,
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "overwrite": args.overwrite,
        "progress": not args.quiet,
    }
    if args.engine == "vllm":
        from probewatch.config import EngineChoice
        from probewatch.engines.vllm.harvest import harvest_vllm

        choice = EngineChoice(engine="vllm", vllm_eager=args.vllm_eager)
        store = harvest_vllm(loaded, dataset, args.out, {"sites": args.sites, **options}, choice)
    else:
        store = harvest(loaded, dataset, args.sites, args.out, **options)
    rows = sum(s["n_rows"] for s in store.manifest["shards"])
    print(f"stored {rows} rows x {len(store.sites)} sites in {store.path}")


def _sweep_table(result: Any) -> str:
    lines = [f"{'site':12} {'val AUROC':>9} {'test AUROC':>10}"]
    for row in result.sweep:
        mark = "  <- best (chosen on validation)" if row.site == result.best_site else ""
        lines.append(f"{row.site:12} {row.val_auroc:9.3f} {row.test_auroc:10.3f}{mark}")
    ensemble = result.artifact.card.get("layer_ensemble")
    if ensemble:
        lines.append(
            f"{'ensemble':12} {ensemble['val_auroc']:9.3f} {ensemble['test_auroc']:10.3f}"
            f"  <- mean of the top {len(ensemble['sites'])} by validation: "
            + ", ".join(ensemble["sites"])
        )
    return "\n".join(lines)


def _metrics_line(metrics: Any) -> str:
    return (
        f"AUROC {metrics.auroc:.3f} (95% CI {metrics.auroc_ci_low:.3f}-"
        f"{metrics.auroc_ci_high:.3f}), accuracy {metrics.accuracy:.3f}, n={metrics.n}"
    )


def _threshold_line(result: Any) -> str:
    m = result.metrics
    return (
        f"threshold at {m.target_fpr:.0%} FPR on {m.control}: recall {m.recall_at_fpr:.3f} "
        f"on test positives (test FPR {m.test_fpr:.3f}); FPR at 99% recall "
        f"{m.fpr_at_99_recall:.3f}; calibration error {m.ece_raw:.3f} raw, "
        f"{m.ece_calibrated:.3f} after Platt"
    )


def _aggregator_arg(text: str) -> dict[str, Any]:
    """'ema_max' or 'rolling_max:window=16' -> {"name": ..., params...}."""
    name, _, rest = text.partition(":")
    params: dict[str, Any] = {"name": name.strip()}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ProbewatchError(f"bad aggregator option {item!r}", hint="e.g. ema_max:alpha=0.3")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def cmd_train(args: argparse.Namespace) -> None:
    from probewatch.data import load_dataset
    from probewatch.pipeline import train_probe
    from probewatch.probes import save_probe

    # Before any work, not after it.
    out = refuse_to_replace(args.out, args.overwrite, "a saved probe")
    loaded = _load_model(args.model, args.device)
    dataset = load_dataset(
        args.dataset,
        args.seed,
        args.text_column,
        args.label_column,
        task=args.task,
        model=loaded,
        limit=args.limit,
    )
    if dataset.card.task == "regression":
        _train_regression(args, loaded, dataset, out)
        return
    control = load_dataset(args.control, args.seed, model=loaded) if args.control else None
    result = train_probe(
        loaded,
        dataset,
        args.sites,
        positions=args.positions or "last",
        kind=args.kind,
        probe_config={"c": args.c} if args.kind == "logistic" else {},
        control=control,
        target_fpr=args.target_fpr,
        aggregator=_aggregator_arg(args.aggregator),
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    save_probe(result.artifact, out, overwrite=args.overwrite)
    if args.json:
        _print_json(
            {"probe": str(out), "site": result.best_site, **result.artifact.card["metrics"]}
        )
        return
    print(_sweep_table(result))
    print(f"\nbest probe {result.best_site}, held-out test: {_metrics_line(result.metrics.test)}")
    print(_threshold_line(result))
    print(f"saved to {out}")


def _train_regression(args: argparse.Namespace, loaded: Any, dataset: Any, out: Path) -> None:
    """Regression datasets: per-token targets (meta["progress"]) read at the response tokens,
    else the example's label; a ridge probe unless --kind says otherwise."""
    from probewatch.probes import save_probe
    from probewatch.regression import per_token_key, sweep_table, train_regression_probe

    target_key = per_token_key(dataset)
    kind = "ridge" if args.kind == "logistic" else args.kind  # logistic is the binary default
    result = train_regression_probe(
        loaded,
        dataset,
        args.sites,
        positions=args.positions or ("mask" if target_key else "last"),
        target_key=target_key,
        kind=kind,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    result.artifact.card["monitor"] = {"scope": "response", "aggregator": {"name": "last"}}
    save_probe(result.artifact, out, overwrite=args.overwrite)
    m = result.metrics
    if args.json:
        _print_json({"probe": str(out), "site": result.best_site, **m.to_dict()})
        return
    print(sweep_table(result.sweep))
    print(
        f"\nbest probe {result.best_site}, held-out test ({m.n_examples} responses, "
        f"{m.n_tokens} tokens): R² {m.r2:.3f} ({m.r2_ci_low:.3f}-{m.r2_ci_high:.3f}), "
        f"MAE {m.mae:.3f}"
    )
    if m.baseline_r2 is not None:
        print(f"position-only baseline: R² {m.baseline_r2:.3f}, MAE {m.baseline_mae:.3f}")
    print(f"saved to {out}")


def cmd_eval(args: argparse.Namespace) -> None:
    from probewatch.data import load_dataset, load_file
    from probewatch.pipeline import evaluate_probe
    from probewatch.probes import load_probe

    artifact = load_probe(args.probe)
    if not (args.file or args.dataset):
        raise ProbewatchError("say what to evaluate on", hint="--dataset NAME or --file DATA.csv")
    model_spec = args.model or artifact.card["model"]["name"]
    loaded = _load_model(model_spec, args.device)
    if args.file:
        dataset = load_file(args.file, args.text_column, args.label_column)
    else:
        dataset = load_dataset(
            args.dataset, args.seed, args.text_column, args.label_column, model=loaded
        )
    split = "test" if args.file else args.split
    metrics = evaluate_probe(
        artifact, loaded, dataset, split, args.allow_model_mismatch, progress=not args.quiet
    )
    if args.json:
        _print_json(
            {
                "probe": str(args.probe),
                "dataset": dataset.name,
                "split": split,
                "overrides": artifact.overrides,
                **metrics.to_dict(),
            }
        )
        return
    for note in artifact.overrides:
        print(f"warning: {note}", file=sys.stderr)
    print(f"{artifact.site} on {dataset.name} ({split}): {_metrics_line(metrics)}")


def cmd_demo(args: argparse.Namespace) -> None:
    """The main job: the truth-probe table, then the monitoring suite, then the server."""
    from probewatch.data import load_dataset
    from probewatch.pipeline import evaluate_probe, train_probe
    from probewatch.probes import save_probe

    print("probewatch demo: a truth probe on SmolLM2-135M-Instruct (embedded, no hub needed)")
    loaded = _load_model("default", args.device)
    dataset = load_dataset("cities")
    summary = dataset.summary()
    print(
        f"dataset cities: {summary['n']} statements from GeoNames (CC-BY 4.0), "
        f"train {summary['splits']['train']['n']} / test {summary['splits']['test']['n']}, "
        "no city in both"
    )
    result = train_probe(loaded, dataset, "all", progress=not args.quiet)
    # Not among the served probes: a statement probe is not a per-token response monitor.
    out = Path(args.out) / "truth" / "cities"
    # The demo's own output directory: replaced atomically on every run.
    save_probe(result.artifact, out, overwrite=True)
    print()
    print(_sweep_table(result))
    print(f"\nbest probe {result.best_site}, held-out test: {_metrics_line(result.metrics.test)}")
    print(_threshold_line(result))
    negated = evaluate_probe(result.artifact, loaded, load_dataset("neg_cities"), progress=False)
    print(f"same probe on negated statements (never trained on): {_metrics_line(negated)}")
    if negated.auroc_ci_high < 0.5:
        print(
            "  -> below 0.5: on negations the probe flips. It reads 'the sentence names the "
            "right country', not truth; train on both forms for a probe that generalizes."
        )
    print(f"\nsaved the probe to {out}/ (weights.safetensors + card.json)")
    print(f"evaluate it on your own data: probewatch eval {out} --file your.csv")
    if args.no_serve:
        return
    from probewatch.suite import train_suite

    suite_dir = Path(args.out) / "probes"
    print(f"\ntraining the monitoring suite (once; cached in {suite_dir})")
    train_suite(loaded, suite_dir, progress=not args.quiet, report=lambda line: print(f"  {line}"))
    serve(config_from_args(ServerConfig, args, model="default", probes_dir=suite_dir))


def cmd_report(args: argparse.Namespace) -> None:
    """Train (cached), then write the HTML + JSON report with every check."""
    from probewatch.data import FAMILIES, load_dataset
    from probewatch.pipeline import train_probe
    from probewatch.reports.generalization import combine
    from probewatch.reports.report import build_report

    loaded = _load_model(args.model, args.device)
    dataset = load_dataset(args.dataset, args.seed, model=loaded)
    control = load_dataset(args.control, args.seed, model=loaded) if args.control else None
    names = args.generalize.split(",") if args.generalize else FAMILIES["truth"]
    if args.dataset not in FAMILIES["truth"] and not args.generalize:
        names = []
    others = [load_dataset(n.strip(), args.seed, model=loaded) for n in names if n.strip()]
    if others and args.both_forms:
        # The fix for negation: one probe trained on affirmative and negated forms together.
        pairs = [d for d in others if d.name in (args.dataset, f"neg_{args.dataset}")]
        if len(pairs) == 2:
            others.append(combine(pairs, f"{args.dataset}+neg_{args.dataset}"))
    result = train_probe(
        loaded,
        dataset,
        args.sites,
        control=control,
        target_fpr=args.target_fpr,
        seed=args.seed,
        progress=not args.quiet,
    )
    command = "probewatch " + " ".join(sys.argv[1:]) if sys.argv[1:] else "probewatch report"
    report = build_report(loaded, dataset, result, others, command=command, progress=not args.quiet)
    page, data = report.save(args.out)
    test = result.metrics.test
    print(
        f"best site {result.best_site}: test AUROC {test.auroc:.3f} "
        f"({test.auroc_ci_low:.3f}-{test.auroc_ci_high:.3f}); {_threshold_line(result)}"
    )
    print(f"wrote {page} and {data}")


def serve(config: ServerConfig) -> None:
    """Start the server (blocks): the app, then the URL, then uvicorn."""
    import uvicorn

    from probewatch.server.app import create_app

    app = create_app(config)
    print(f"probewatch serving {config.model} with the probes in {config.probes_dir}")
    base = f"http://{config.host}:{config.port}"
    print(f"dashboard: {base}/   API: {base}/v1", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")


def cmd_serve(args: argparse.Namespace) -> None:
    serve(config_from_args(ServerConfig, args))


def cmd_families(args: argparse.Namespace) -> None:
    """A probe per binary dataset family: the held-out AUROC table."""
    from probewatch.reports.families import (
        BINARY_FAMILIES,
        as_rows,
        evaluate_families,
        family_details,
    )

    names = args.datasets.split(",") if args.datasets else list(BINARY_FAMILIES)
    loaded = _load_model(args.model, args.device)
    results = evaluate_families(loaded, names, args.sites, args.limit, not args.quiet)
    if args.json:
        _print_json(as_rows(results))
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


def _add_model_args(p: argparse.ArgumentParser, default: str | None = "default") -> None:
    p.add_argument("--model", default=default, help="embedded name, local directory or hub id")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if present)")


def _add_column_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-column", default="text", help="text column of a CSV/JSONL file")
    p.add_argument("--label-column", default="label", help="label column (0/1, true/false)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probewatch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"probewatch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list embedded models and whether they are cached")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("datasets", help="list, show or export built-in datasets")
    p.add_argument("action", choices=["list", "show", "export"], nargs="?", default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="export: output .jsonl file")
    p.add_argument("--model", help="build the generated datasets with this model")
    p.add_argument("--device", default=None)
    p.add_argument("--limit", type=int, help="generated datasets: at most this many items")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("harvest", help="stream activations of a dataset to an on-disk store")
    _add_model_args(p)
    p.add_argument("--dataset", required=True, help="built-in name or a .csv/.jsonl file")
    p.add_argument("--limit", type=int, help="generated datasets: at most this many items")
    p.add_argument("--sites", default="all", help="e.g. resid.12,mlp_out.3 or resid.* or all")
    p.add_argument("--positions", default="last", choices=["last", "all", "mask"])
    p.add_argument("--out", required=True, help="store directory (resumes if interrupted)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="docs/vllm.md")
    p.add_argument("--vllm-eager", action="store_true", help="vLLM without torch.compile")
    _add_column_args(p)
    p.set_defaults(func=cmd_harvest)

    p = sub.add_parser("train", help="sweep sites, train the best probe, save it")
    _add_model_args(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--limit", type=int, help="generated datasets: at most this many items")
    p.add_argument("--sites", default="all", help="sites to sweep (default: every resid layer)")
    p.add_argument(
        "--positions",
        choices=["last", "all", "mask"],
        help="tokens to read (default: last; mask for per-token regression targets)",
    )
    p.add_argument("--out", required=True, help="probe directory to create")
    p.add_argument("--kind", default="logistic", help="probe kind (logistic, mass_mean, ...)")
    p.add_argument(
        "--task",
        default="auto",
        choices=["auto", "binary", "regression"],
        help="for your own file: auto = regression only if some label is fractional",
    )
    p.add_argument("--c", type=float, default=0.05, help="logistic: inverse L2 strength")
    p.add_argument(
        "--control",
        help="benign control dataset for the threshold (default: the validation negatives)",
    )
    p.add_argument("--target-fpr", type=float, default=0.01, help="FPR the threshold is set at")
    p.add_argument(
        "--aggregator",
        default="mean",
        help="how token scores become one score with "
        "--positions all/mask: mean, max, last, ema_max, rolling_max:window=8, "
        "softmax_weighted",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _add_column_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a saved probe on a dataset or your own file")
    p.add_argument("probe", help="probe directory")
    _add_model_args(p, default=None)
    p.add_argument("--dataset", help="built-in dataset name")
    p.add_argument("--file", help="your own .csv/.tsv/.jsonl file")
    p.add_argument("--split", default="test", help="split of a built-in dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-model-mismatch", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _add_column_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="train and write an HTML + JSON report with every check")
    _add_model_args(p)
    p.add_argument("--dataset", default="cities")
    p.add_argument("--sites", default="all")
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
    p.add_argument("--control", help="benign control dataset for the threshold")
    p.add_argument("--target-fpr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/cities")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("families", help="train a probe on each binary dataset family")
    _add_model_args(p)
    p.add_argument("--datasets", help="comma list (default: every binary family)")
    p.add_argument("--sites", default="resid.10,resid.15,resid.19,resid.24")
    p.add_argument("--limit", type=int, help="generated datasets: at most this many items")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_families)

    p = sub.add_parser("serve", help="OpenAI-compatible server with live probe scores + dashboard")
    add_config_args(p, ServerConfig)
    p.set_defaults(func=cmd_serve)

    for module in VERB_MODULES:
        importlib.import_module(module).register(sub)

    p = sub.add_parser("demo", help="the main job: train and evaluate a truth probe end to end")
    p.add_argument("--out", default=str(DEMO_DIR))
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--no-serve", action="store_true", help="stop after the truth-probe table")
    add_config_args(p, ServerConfig, only=("device", "port"))
    p.set_defaults(func=cmd_demo)
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
