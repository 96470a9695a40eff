"""`probewatch steer ...` and `probewatch audit`: the CLI over `probewatch.steer`.

The main CLI calls `register(subparsers)`; flags come from ExtractSpec, InterventionSpec,
AuditSpec and RefusalDemoSpec (probewatch.config); handlers raise ProbewatchError for bad
input, which the main CLI prints. Outputs are never overwritten unless --overwrite is
given, and they are checked before any model work starts, so a long run cannot end in
"already exists".
"""

import argparse
import json
from pathlib import Path
from typing import Any

from probewatch.cli_args import (
    add_command,
    add_config_args,
    config_from_args,
    data_and_model,
    load_model,
)
from probewatch.config import (
    AuditSpec,
    ExtractSpec,
    InterventionSpec,
    ModelChoice,
    RefusalDemoSpec,
    RunFlags,
    split_list,
)
from probewatch.errors import ProbewatchError
from probewatch.paths import refuse_to_replace

PROBE_CARD = "card.json"


def _intervention(spec: InterventionSpec, loaded: Any) -> Any:
    from probewatch.probes.artifact import load_probe
    from probewatch.steer import Steering, load_vector, make_intervention

    allow = spec.allow_model_mismatch
    vector = load_vector(spec.vector, loaded, allow)
    probe = load_probe(spec.probe, loaded, allow) if spec.probe else None
    how = Steering(spec.scale, spec.site_list(), spec.threshold, allow)
    return make_intervention(loaded, vector, spec.mode, how, probe=probe)


def _model(args: argparse.Namespace) -> Any:
    return load_model(config_from_args(ModelChoice, args))


# --- handlers ---------------------------------------------------------------------------


def cmd_extract(args: argparse.Namespace) -> None:
    spec = config_from_args(ExtractSpec, args)
    out = refuse_to_replace(args.out, args.overwrite)
    dataset, loaded = data_and_model(spec, config_from_args(ModelChoice, args))
    from probewatch.steer import extract_directions, save_vector

    vector = extract_directions(
        loaded,
        dataset,
        spec.sites,
        positions=spec.positions,
        method=spec.method,
        split=spec.split,
        seed=spec.seed,
        batch_size=spec.batch_size,
        progress=not args.quiet,
    )
    save_vector(vector, out, overwrite=args.overwrite)
    norms = ", ".join(f"{s} |v|={float(vector[s].norm()):.2f}" for s in vector.sites)
    print(f"wrote {len(vector.sites)} direction(s) to {out}: {norms}")


def cmd_from_probe(args: argparse.Namespace) -> None:
    from probewatch.probes.artifact import load_probe
    from probewatch.steer import from_probe, save_vector

    out = refuse_to_replace(args.out, args.overwrite)
    vector = from_probe(load_probe(args.probe))
    save_vector(vector, out, overwrite=args.overwrite)
    print(f"wrote the unit direction of {args.probe} at {vector.sites[0]} to {out}")


def cmd_export(args: argparse.Namespace) -> None:
    from probewatch.steer import load_vector
    from probewatch.steer.export import export_gguf

    out = refuse_to_replace(args.out, args.overwrite)
    vector = load_vector(args.vector)
    if args.sites:
        vector = _only_sites(vector, split_list(args.sites))
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


def cmd_orthogonalize(args: argparse.Namespace) -> None:
    from probewatch.steer import load_vector, save_orthogonalized

    out = refuse_to_replace(args.out, args.overwrite)
    loaded = _model(args)
    vector = load_vector(args.vector, loaded, args.allow_model_mismatch)
    site = args.site or vector.sites[0]
    save_orthogonalized(loaded, vector, out, site=site, overwrite=args.overwrite)
    print(f"wrote the model with the {site} direction projected out of its weights to {out}")
    print(f"load it like any other: probewatch serve --model {out}")


def cmd_try(args: argparse.Namespace) -> None:
    """One prompt, greedy, without and with the intervention: the quickest look."""
    spec = config_from_args(InterventionSpec, args)
    loaded = _model(args)
    from probewatch.steer.refusal import generate

    intervention = _intervention(spec, loaded)
    chat = [[{"role": "user", "content": args.prompt}]]
    before = generate(loaded, chat, args.max_new_tokens, 1)[0]
    with intervention.apply():
        after = generate(loaded, chat, args.max_new_tokens, 1)[0]
    if args.json:
        print(json.dumps({"intervention": intervention.name, "original": before, "after": after}))
        return
    print(f"original:\n  {before.strip()}\n{intervention.name}:\n  {after.strip()}")


def cmd_refusal_demo(args: argparse.Namespace) -> None:
    from probewatch.steer.demo import refusal_demo

    spec = config_from_args(RefusalDemoSpec, args)
    out = refuse_to_replace(args.out, args.overwrite)
    demo = refusal_demo(_model(args), spec, out)
    print(f"chosen layer {demo.chosen.site}")
    print(f"ablation: {demo.ablation.verdict}")
    print(f"addition: {demo.addition.verdict}")
    print(f"wrote {out}/summary.json, ablation/audit.html and addition/audit.html")


def cmd_audit(args: argparse.Namespace) -> None:
    spec, audit = config_from_args(InterventionSpec, args), config_from_args(AuditSpec, args)
    out = refuse_to_replace(args.out, args.overwrite)
    probe_dirs = _probe_dirs(args.probes) if args.probes else []  # checked before the model
    loaded = _model(args)
    from probewatch.probes.artifact import load_probe
    from probewatch.steer.audit import run_audit

    intervention = _intervention(spec, loaded)
    probes = [load_probe(p, loaded, audit.allow_model_mismatch) for p in probe_dirs]
    report = run_audit(loaded, intervention, audit, probes)
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
    missing = [str(p) for p in paths if not (p / PROBE_CARD).is_file()]
    if missing:
        raise ProbewatchError(
            f"not a probe directory: {', '.join(missing)}",
            hint="pass directories written by `probewatch train` (or one folder holding them)",
        )
    return paths


# --- parsers ----------------------------------------------------------------------------


def _out(p: argparse.ArgumentParser, help_text: str, default: Path | None = None) -> None:
    p.add_argument("--out", type=Path, required=default is None, default=default, help=help_text)
    add_config_args(p, RunFlags, only=("overwrite",))


def register(subparsers: Any) -> None:
    """Register `steer` (with its actions) and `audit` on the main CLI's subparsers."""
    steer = subparsers.add_parser(
        "steer", help="steering vectors: extract, export, bake into weights, try on a prompt"
    )
    actions = steer.add_subparsers(dest="action", required=True)

    p = add_command(actions, "extract", cmd_extract, "directions from a contrast dataset (1 - 0)")
    add_config_args(p, ModelChoice)
    add_config_args(p, ExtractSpec)
    _out(p, "vector directory to create")
    add_config_args(p, RunFlags, only=("quiet",))

    p = add_command(actions, "from-probe", cmd_from_probe, "a linear probe's direction as a vector")
    p.add_argument("probe", type=Path, help="probe directory")
    _out(p, "vector directory to create")

    p = add_command(actions, "export", cmd_export, "write a llama.cpp control vector (GGUF)")
    p.add_argument("vector", type=Path, help="vector directory")
    p.add_argument("--sites", help="export only these of the vector's sites (resid.N, N >= 1)")
    p.add_argument("--scale", type=float, default=1.0, help="strength baked into the file")
    p.add_argument("--model-hint", help="llama.cpp model hint (default: the model type)")
    _out(p, "output .gguf file")

    p = add_command(
        actions,
        "orthogonalize",
        cmd_orthogonalize,
        "save a model copy with the direction projected out of its weights",
    )
    add_config_args(p, InterventionSpec, only=("vector", "allow_model_mismatch"))
    add_config_args(p, ModelChoice)
    p.add_argument("--site", help="which of the vector's sites gives the direction")
    _out(p, "model directory to create")

    p = add_command(
        actions, "try", cmd_try, "one prompt, greedy, without and with the intervention"
    )
    add_config_args(p, InterventionSpec)
    add_config_args(p, ModelChoice)
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--max-new-tokens", type=int, default=48, help="greedy tokens to generate")
    add_config_args(p, RunFlags, only=("json",))

    p = add_command(
        actions,
        "refusal-demo",
        cmd_refusal_demo,
        "extract the refusal direction, choose its layer, audit ablation and addition",
    )
    add_config_args(p, ModelChoice)
    add_config_args(p, RefusalDemoSpec)
    _out(p, "report directory", Path("reports/refusal"))

    p = add_command(
        subparsers,
        "audit",
        cmd_audit,
        "intervened vs original: target behaviour, side effects, probe shifts",
    )
    add_config_args(p, InterventionSpec)
    add_config_args(p, ModelChoice)
    p.add_argument(
        "--probes", help="probe directories (comma list, or one folder of probes) to watch shift"
    )
    add_config_args(p, AuditSpec)
    _out(p, "report directory (audit.html + audit.json)")
