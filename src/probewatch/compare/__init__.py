"""Comparing two models, or a model with itself under an intervention, on the same prompts.

    from probewatch.compare import CompareSpec, Side, compare
    report = compare(Side(base, "A"), Side(organism, "B"), CompareSpec(b="organism-dir"))
    report.save("compare/")

See docs/compare.md for what the report contains and how each number is computed.
"""

from typing import Any

from probewatch.compare.spec import CompareSpec

__all__ = ["CompareSpec", "Side", "compare", "load_sides"]


def __getattr__(name: str) -> Any:  # lazy: the spec (and `--help`) import no torch
    if name == "compare":
        from probewatch.compare.run import compare

        return compare
    if name == "Side":
        from probewatch.compare.forward import Side

        return Side
    if name == "load_sides":
        from probewatch.compare.sides import load_sides

        return load_sides
    raise AttributeError(name)
