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
import sys
import types
from collections.abc import Callable
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

from probewatch.config import DataSource, ModelChoice

if TYPE_CHECKING:
    from probewatch.data.base import Dataset
    from probewatch.models.loading import LoadedModel

T = TypeVar("T")


@cache
def _class_bodies(module: str) -> dict[str, list[ast.stmt]]:
    """Top-level class bodies of a module's source, parsed once per module."""
    try:
        source = inspect.getsource(sys.modules[module])
    except (OSError, TypeError, KeyError):  # no source (frozen install): flags without help
        return {}
    tree = ast.parse(source)
    return {node.name: node.body for node in tree.body if isinstance(node, ast.ClassDef)}


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of `cls` and its dataclass bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = _class_bodies(klass.__module__).get(klass.__qualname__, [])
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

    Fields are grouped in the help by the dataclass that declares them (the most specific
    first), titled by its docstring. `defaults` replaces a field's default for this command
    only (e.g. `--model` defaulting to the probe's own model in `eval`); the dataclass
    default stays the API's."""
    hints, docs = get_type_hints(cls), field_docs(cls)
    wanted = [
        f
        for f in dataclasses.fields(cls)
        if f.init
        and f.metadata.get("cli", True)
        and f.name not in exclude
        and (only is None or f.name in only)
        and not _present(parser, f.name)
    ]
    owners = [k for k in cls.__mro__ if dataclasses.is_dataclass(k)]
    for owner in owners:
        own = [f for f in wanted if _declared_by(owner, f.name) and f.name not in _seen(parser)]
        if not own:
            continue
        target: Any = parser
        if len(owners) > 1 and only is None and not all(_is_positional(f) for f in own):
            title = (inspect.getdoc(owner) or owner.__name__).split("\n")[0].rstrip(".")
            target = parser.add_argument_group(title)
        for f in own:
            default = (defaults or {}).get(f.name, _default(f))
            _add_field(target, f, _unwrap_optional(hints[f.name]), default, docs.get(f.name, ""))


def _declared_by(owner: type, name: str) -> bool:
    return name in inspect.get_annotations(owner)


def _seen(parser: argparse.ArgumentParser) -> set[str]:
    return {action.dest for action in parser._actions}


def _is_positional(f: dataclasses.Field[Any]) -> bool:
    return bool(f.metadata.get("positional"))


def _add_field(target: Any, f: dataclasses.Field[Any], kind: Any, default: Any, doc: str) -> None:
    doc = doc.replace("%", "%%")  # argparse formats help with %
    if kind is bool:
        on = default is not True
        flag = _flag(f) if on else "--no-" + f.name.replace("_", "-")
        action = "store_true" if on else "store_false"
        target.add_argument(flag, dest=f.name, action=action, help=doc if on else f"do not {doc}")
        return
    options: dict[str, Any] = {"help": doc}
    if get_origin(kind) is Literal:
        options["choices"] = list(get_args(kind))
        options["type"] = type(get_args(kind)[0])
    elif get_origin(kind) is tuple:
        options["type"] = get_args(kind)[0]
        options["nargs"] = "+"
    elif kind in (int, float, str, Path):
        options["type"] = kind
    else:
        raise TypeError(f"{f.name}: no CLI flag for type {kind!r}")
    options.update({k: f.metadata[k] for k in ("nargs", "metavar") if k in f.metadata})
    if default is dataclasses.MISSING:
        options["required"] = not _is_positional(f)
    else:
        options["default"] = default
        if default not in (None, "") and "(default" not in doc:
            options["help"] = f"{doc} (default: {default})".strip()
    if _is_positional(f):
        options.pop("required", None)
        target.add_argument(f.name, **options)
        return
    if "choices" not in options:
        options.setdefault("metavar", _flag(f).lstrip("-").replace("-", "_").upper())
    target.add_argument(_flag(f), dest=f.name, **options)


def config_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """The dataclass `cls` from the parsed flags (fields without a flag keep their default)."""
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and hasattr(args, f.name)
    }
    values.update(overrides)
    return cls(**values)


def add_command(
    subparsers: Any, name: str, func: Callable[[argparse.Namespace], None], help_text: str
) -> argparse.ArgumentParser:
    """A sub-command whose handler is `func(args)`; its flags come from add_config_args."""
    p: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(func=func)
    return p


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def load_model(choice: ModelChoice) -> "LoadedModel":
    """Load the model a command names (the slow step: every check comes before it)."""
    from transformers.utils import logging as hf_logging

    from probewatch.models import load_model as load

    hf_logging.disable_progress_bar()  # per-tensor bars drown out what the user asked for
    logging.getLogger(__name__).info("loading model %s", choice.model)
    return load(choice.model, device=choice.device)


def data_and_model(source: DataSource, choice: ModelChoice) -> tuple["Dataset", "LoadedModel"]:
    """The dataset, then the model: a file or built-in dataset is read (and its columns
    checked) before the model loads; a generated one needs the model first."""
    from probewatch.data import load_source, needs_model

    source.require()
    dataset = None if needs_model(source) else load_source(source)
    loaded = load_model(choice)
    return dataset or load_source(source, loaded), loaded
