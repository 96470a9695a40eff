"""`probewatch attribute TASK ...`: the CLI over `probewatch.attribution` (flags from
`probewatch.config.AttributeSpec`; --help stays torch-free)."""

import argparse

from probewatch.cli_args import add_config_args, config_from_args, load_model, print_json
from probewatch.config import AttributeSpec, RunFlags


def cmd_attribute(args: argparse.Namespace) -> None:
    spec = config_from_args(AttributeSpec, args)
    flags = config_from_args(RunFlags, args)
    if spec.out and spec.task != "train-lens":
        from probewatch.paths import refuse_to_replace

        refuse_to_replace(spec.out, flags.overwrite, "an attribution report", "output directory")
    loaded = load_model(spec)
    if spec.task == "train-lens":
        from probewatch.attribution.tuned_lens import (
            TunedLensSpec,
            compare_lenses,
            save_tuned_lens,
            train_tuned_lens,
        )
        from probewatch.data.prose import book_passages

        lens = train_tuned_lens(
            loaded, book_passages("train"), TunedLensSpec(time_budget_s=spec.budget_s)
        )
        path = save_tuned_lens(lens, loaded, spec.out, overwrite=flags.overwrite)
        rows = compare_lenses(loaded, lens, book_passages("test")[:60])
        print_json({"lens": str(path), **lens.card, "held_out": rows})
        return
    from probewatch.attribution.run import run_attribution, write_outputs

    result = run_attribution(loaded, spec)
    if spec.out:
        path = write_outputs(result, spec.out, flags.overwrite)
        print_json({"report": str(path / "report.html"), "numbers": str(path / "result.json")})
    if flags.json or not spec.out:
        print_json(result["json"])


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "attribute",
        help="why did it say that: DLA, patching, AtP, logit/tuned lens",
        description=__doc__,
    )
    add_config_args(p, AttributeSpec)
    add_config_args(p, RunFlags, only=("overwrite", "json"))
    p.set_defaults(func=cmd_attribute)
