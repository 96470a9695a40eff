"""`probewatch steer ...` and `probewatch audit`: the CLI over `probewatch.steer`.

The main CLI calls `add_steer_parsers(subparsers, load_model)`; handlers raise ProbewatchError
for bad input, which the main CLI prints. Outputs are never overwritten unless --overwrite is
given, and they are checked before any model work starts, so a long run cannot end in
"already exists".
"""

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from probewatch.config import METHODS, MODES
from probewatch.errors import ProbewatchError
from probewatch.paths import refuse_to_replace

LoadModel = Callable[[str, str | None], Any]
PROBE_CARD = "card.json"


def _sites_arg(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="embedded name, local directory or hub id")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if present)")
    p.add_argument(
        "--allow-model-mismatch",
        action="store_true",
        help="use a vector or probe made on other weights (recorded in the output)",
    )


def _intervention_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("vector", help="steering vector directory (from `probewatch steer extract`)")
    p.add_argument("--mode", default="add", choices=MODES, help="what to do with the vector")
    p.add_argument("--scale", type=float, default=1.0, help="add/gated: steering strength")
    p.add_argument(
        "--sites",
        help="add/gated: sites to add at (default: all of the vector's); "
        "ablate/orthogonalize: the site whose direction is used",
    )
    p.add_argument("--probe", help="gated: the probe that gates the steering")
    p.add_argument("--threshold", type=float, help="gated: logit threshold (default: probe's)")


def _intervention(args: argparse.Namespace, loaded: Any) -> Any:
    from probewatch.probes.artifact import load_probe
    from probewatch.steer import load_vector, make_intervention

    vector = load_vector(args.vector, loaded, args.allow_model_mismatch)
    probe = load_probe(args.probe, loaded, args.allow_model_mismatch) if args.probe else None
    return make_intervention(
        loaded,
        vector,
        args.mode,
        scale=args.scale,
        sites=_sites_arg(args.sites),
        probe=probe,
        threshold=args.threshold,
        allow_model_mismatch=args.allow_model_mismatch,
    )


# --- handlers ---------------------------------------------------------------------------


def cmd_extract(args: argparse.Namespace, load_model: LoadModel) -> None:
    from probewatch.data import load_dataset
    from probewatch.steer import extract_directions, save_vector

    out = refuse_to_replace(args.out, args.overwrite)
    loaded = load_model(args.model, args.device)
    dataset = load_dataset(args.dataset, args.seed, model=loaded, limit=args.limit)
    vector = extract_directions(
        loaded,
        dataset,
        args.sites,
        positions=args.positions,
        method=args.method,
        split=args.split,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    save_vector(vector, out, overwrite=args.overwrite)
    norms = ", ".join(f"{s} |v|={float(vector[s].norm()):.2f}" for s in vector.sites)
    print(f"wrote {len(vector.sites)} direction(s) to {out}: {norms}")


def cmd_from_probe(args: argparse.Namespace, _load_model: LoadModel) -> None:
    from probewatch.probes.artifact import load_probe
    from probewatch.steer import from_probe, save_vector

    out = refuse_to_replace(args.out, args.overwrite)
    vector = from_probe(load_probe(args.probe))
    save_vector(vector, out, overwrite=args.overwrite)
    print(f"wrote the unit direction of {args.probe} at {vector.sites[0]} to {out}")


def cmd_export(args: argparse.Namespace, _load_model: LoadModel) -> None:
    from probewatch.steer import load_vector
    from probewatch.steer.export import export_gguf

    out = refuse_to_replace(args.out, args.overwrite)
    vector = load_vector(args.vector)
    if args.sites:
        vector = _only_sites(vector, _sites_arg(args.sites) or [])
    export_gguf(vector, out, scale=args.scale, model_hint=args.model_hint, overwrite=args.overwrite)
    print(
        f"wrote {out} ({len(vector.sites)} layer(s), scale {args.scale:g}); use it with "
        f"llama.cpp: --control-vector {out}"
    )


def _only_sites(vector: Any, sites: list[str]) -> Any:
    from probewatch.steer import SteeringVector

    missing = [s for s in sites if s not in vector.sites]
    if missing:
        raise ProbewatchError(
            f"the vector has no {', '.join(missing)}", hint=f"it holds {', '.join(vector.sites)}"
        )
    return SteeringVector({s: vector[s] for s in sites}, {**vector.card, "sites": sites})


def cmd_orthogonalize(args: argparse.Namespace, load_model: LoadModel) -> None:
    from probewatch.steer import load_vector, save_orthogonalized

    out = refuse_to_replace(args.out, args.overwrite)
    loaded = load_model(args.model, args.device)
    vector = load_vector(args.vector, loaded, args.allow_model_mismatch)
    site = args.site or vector.sites[0]
    save_orthogonalized(loaded, vector, out, site=site, overwrite=args.overwrite)
    print(f"wrote the model with the {site} direction projected out of its weights to {out}")
    print(f"load it like any other: probewatch serve --model {out}")


def cmd_try(args: argparse.Namespace, load_model: LoadModel) -> None:
    """One prompt, greedy, without and with the intervention: the quickest look."""
    from probewatch.steer.refusal import generate

    loaded = load_model(args.model, args.device)
    intervention = _intervention(args, loaded)
    chat = [[{"role": "user", "content": args.prompt}]]
    before = generate(loaded, chat, args.max_new_tokens, 1)[0]
    with intervention.apply():
        after = generate(loaded, chat, args.max_new_tokens, 1)[0]
    if args.json:
        print(json.dumps({"intervention": intervention.name, "original": before, "after": after}))
        return
    print(f"original:\n  {before.strip()}\n{intervention.name}:\n  {after.strip()}")


def cmd_refusal_demo(args: argparse.Namespace, load_model: LoadModel) -> None:
    from probewatch.steer.demo import refusal_demo

    out = refuse_to_replace(args.out, args.overwrite)
    loaded = load_model(args.model, args.device)
    layers = range(*args.layers) if args.layers else None
    demo = refusal_demo(
        loaded,
        n=args.n,
        n_val=args.n_val,
        max_new_tokens=args.max_new_tokens,
        layers=layers,
        add_scale=args.scale,
        out=out,
        seed=args.seed,
    )
    print(f"chosen layer {demo.chosen.site}")
    print(f"ablation: {demo.ablation.verdict}")
    print(f"addition: {demo.addition.verdict}")
    print(f"wrote {out}/summary.json, ablation/audit.html and addition/audit.html")


def cmd_audit(args: argparse.Namespace, load_model: LoadModel) -> None:
    from probewatch.probes.artifact import load_probe
    from probewatch.steer.audit import run_audit

    out = refuse_to_replace(args.out, args.overwrite)
    loaded = load_model(args.model, args.device)
    intervention = _intervention(args, loaded)
    probe_dirs = _probe_dirs(args.probes) if args.probes else []
    probes = [load_probe(p, loaded, args.allow_model_mismatch) for p in probe_dirs]
    report = run_audit(
        loaded,
        intervention,
        n=args.n,
        probes=probes,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    report.save(out, overwrite=args.overwrite)
    print(report.verdict)
    print(f"wrote {out / 'audit.html'} and {out / 'audit.json'}")


def _probe_dirs(spec: str) -> list[Path]:
    """A comma list of probe directories, or one directory holding several."""
    paths = [Path(p.strip()) for p in spec.split(",") if p.strip()]
    if len(paths) == 1 and paths[0].is_dir() and not (paths[0] / PROBE_CARD).exists():
        children = sorted(p for p in paths[0].iterdir() if (p / PROBE_CARD).exists())
        if not children:
            raise ProbewatchError(
                f"{paths[0]} holds no probes", hint="pass probe directories, comma-separated"
            )
        return children
    return paths


# --- parsers ----------------------------------------------------------------------------


def _bind(func: Callable[[argparse.Namespace, LoadModel], None], load_model: LoadModel) -> Any:
    return lambda args: func(args, load_model)


def add_steer_parsers(subparsers: Any, load_model: LoadModel) -> None:
    """Register `steer` (with its actions) and `audit` on the main CLI's subparsers."""
    steer = subparsers.add_parser(
        "steer", help="steering vectors: extract, export, bake into weights, try on a prompt"
    )
    actions = steer.add_subparsers(dest="action", required=True)

    p = actions.add_parser("extract", help="directions from a contrast dataset (label 1 - 0)")
    _model_args(p)
    p.add_argument("--dataset", required=True, help="built-in binary dataset or your file")
    p.add_argument("--sites", required=True, help="e.g. resid.10 or resid.8,resid.12")
    p.add_argument("--positions", default="last", choices=["last", "all", "mask"])
    p.add_argument("--method", default="mean_diff", choices=METHODS)
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=int, help="generated datasets: at most this many items")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="vector directory to create")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_bind(cmd_extract, load_model))

    p = actions.add_parser("from-probe", help="a linear probe's direction as a vector")
    p.add_argument("probe", help="probe directory")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_bind(cmd_from_probe, load_model))

    p = actions.add_parser("export", help="write a llama.cpp control vector (GGUF)")
    p.add_argument("vector", help="vector directory")
    p.add_argument("--out", required=True, help="output .gguf file")
    p.add_argument("--sites", help="export only these of the vector's sites (resid.N, N >= 1)")
    p.add_argument("--scale", type=float, default=1.0, help="strength baked into the file")
    p.add_argument("--model-hint", help="llama.cpp model hint (default: the model type)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_bind(cmd_export, load_model))

    p = actions.add_parser(
        "orthogonalize", help="save a model copy with the direction projected out of its weights"
    )
    p.add_argument("vector", help="vector directory")
    _model_args(p)
    p.add_argument("--site", help="which of the vector's sites gives the direction")
    p.add_argument("--out", required=True, help="model directory to create")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_bind(cmd_orthogonalize, load_model))

    p = actions.add_parser("try", help="one prompt, greedy, without and with the intervention")
    _intervention_args(p)
    _model_args(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bind(cmd_try, load_model))

    p = actions.add_parser(
        "refusal-demo",
        help="extract the refusal direction, choose its layer, audit ablation and addition",
    )
    _model_args(p)
    p.add_argument("--n", type=int, default=64, help="held-out prompts per set")
    p.add_argument("--n-val", type=int, default=32, help="validation prompts for the layer")
    p.add_argument("--layers", type=int, nargs=3, metavar=("START", "STOP", "STEP"))
    p.add_argument("--scale", type=float, default=1.0, help="strength of the addition")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/refusal")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_bind(cmd_refusal_demo, load_model))

    p = subparsers.add_parser(
        "audit", help="intervened vs original: target behaviour, side effects, probe shifts"
    )
    _intervention_args(p)
    _model_args(p)
    p.add_argument(
        "--probes", help="probe directories (comma list, or one folder of probes) to watch shift"
    )
    p.add_argument("--n", type=int, default=64, help="prompts per set")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="report directory (audit.html + audit.json)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_bind(cmd_audit, load_model))


def register(subparsers: Any) -> None:
    from probewatch.cli import _load_model

    add_steer_parsers(subparsers, _load_model)
