"""`probewatch compare A [B]`: compare two models, or a model with itself under --steer."""

import argparse
from typing import Any

from probewatch.cli_args import add_config_args, config_from_args, print_json
from probewatch.compare.spec import CompareSpec
from probewatch.config import RunFlags
from probewatch.paths import refuse_to_replace


def cmd_compare(args: argparse.Namespace) -> None:
    spec = config_from_args(CompareSpec, args)
    refuse_to_replace(spec.out, args.overwrite, "a comparison report", "--out")
    from probewatch.cli_args import load_model
    from probewatch.compare import compare, load_sides
    from probewatch.config import ModelChoice

    a = load_model(ModelChoice(model=spec.model, device=spec.device))
    side_a, side_b = load_sides(spec, a)
    report = compare(side_a, side_b, spec)
    out = report.save(spec.out, overwrite=args.overwrite)
    if args.json:
        print_json(report.to_dict())
        return
    print(report.verdict)
    print(f"report: {out / 'compare.html'} and {out / 'compare.json'}")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare", help="compare two models (or a model and its intervention) on the same prompts"
    )
    add_config_args(p, CompareSpec)
    add_config_args(p, RunFlags, only=("overwrite", "json"))
    p.set_defaults(func=cmd_compare)
