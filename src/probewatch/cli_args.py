"""CLI flags generated from the config dataclasses in `probewatch.config`.

`add_config_args(parser, Cls)` adds one flag per field: the field's docstring is the help,
its default the default, a `Literal` gives the choices, a bool becomes a switch (`--name`, or
`--no-name` when it defaults to True), `X | None` is optional. A flag already on the parser
is not added again, so configs that share a field (seed, sites, model) share one flag.
`config_from_args(Cls, args)` builds the dataclass back from the parsed namespace, which runs
its validation before any model loads.

Field metadata: `{"cli": False}` keeps a field off the command line, `{"flag": "--probes"}`
renames it, `{"positional": True}` makes it positional, `nargs`/`metavar` pass through.
"""

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import logging
import textwrap
import types
from functools import cache
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from probewatch.config import ModelChoice

if TYPE_CHECKING:
    from probewatch.models.loading import LoadedModel

T = TypeVar("T")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of `cls` and its dataclass bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source (frozen install): flags without help text
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _unwrap_optional(hint: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _flag(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("flag") or "--" + f.name.replace("_", "-"))


def _present(parser: argparse.ArgumentParser, dest: str) -> bool:
    return any(action.dest == dest for action in parser._actions)


def add_config_args(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    only: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add a flag for each field of the dataclass `cls` (all, or those in `only`).

    `defaults` replaces a field's default for this command only (e.g. `--model` defaulting
    to the probe's own model in `eval`); the dataclass default stays the API's."""
    hints = get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if not f.init or not f.metadata.get("cli", True) or f.name in exclude:
            continue
        if (only is not None and f.name not in only) or _present(parser, f.name):
            continue
        kind = _unwrap_optional(hints[f.name])
        default = (defaults or {}).get(f.name, _default(f))
        help_text = docs.get(f.name, "")
        options: dict[str, Any] = {"help": help_text}
        if kind is bool:
            on = default is not True
            flag = _flag(f) if on else "--no-" + f.name.replace("_", "-")
            options["help"] = help_text if on else f"do not {help_text}"
            parser.add_argument(
                flag, dest=f.name, action="store_true" if on else "store_false", **options
            )
            continue
        if get_origin(kind) is Literal:
            options["choices"] = list(get_args(kind))
            options["type"] = type(get_args(kind)[0])
        elif get_origin(kind) is tuple:
            options["type"] = get_args(kind)[0]
            options["nargs"] = f.metadata.get("nargs", "+")
        elif kind in (int, float, str, Path):
            options["type"] = kind
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no CLI flag for type {kind!r}")
        for key in ("nargs", "metavar"):
            if key in f.metadata:
                options[key] = f.metadata[key]
        if default is dataclasses.MISSING:
            if not f.metadata.get("positional"):
                options["required"] = True
        else:
            options["default"] = default
            if default not in (None, "") and "choices" not in options:
                options["help"] = f"{help_text} (default: {default})".strip()
        if f.metadata.get("positional"):
            parser.add_argument(f.name, **options)
        else:
            if "choices" not in options:
                options.setdefault("metavar", _flag(f).lstrip("-").replace("-", "_").upper())
            parser.add_argument(_flag(f), dest=f.name, **options)


def config_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """The dataclass `cls` from the parsed flags (fields without a flag keep their default)."""
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and hasattr(args, f.name)
    }
    values.update(overrides)
    return cls(**values)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def load_model(choice: ModelChoice) -> "LoadedModel":
    """Load the model a command names (the slow step: every check comes before it)."""
    from transformers.utils import logging as hf_logging

    from probewatch.models import load_model as load

    hf_logging.disable_progress_bar()  # per-tensor bars drown out what the user asked for
    logging.getLogger(__name__).info("loading model %s", choice.model)
    return load(choice.model, device=choice.device)
