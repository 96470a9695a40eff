"""Forward-hook plumbing for every reader and writer of activations (capture, monitor,
steering, attribution): hooks live only inside context managers, so the model is untouched
afterwards, also when the block raises.

    with registered_hooks([(module, hook), ...]):   # any hooks, removed on exit
    with add_vector(model, "resid.6", v, 4.0):      # a write hook: output + scale * v

Inside a hook, `hidden_of(output)` is the hidden-state tensor of a module's output (blocks and
attention may return tuples) and `with_hidden(output, new)` replaces it.
"""

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from probewatch.errors import ProbewatchError
from probewatch.sites import layer_list, parse_site, resolve_module

Hook = Callable[[nn.Module, Any, Any], Any]


def hidden_of(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a module's output: decoder blocks return a tensor in recent
    transformers, a tuple in older ones and GPT-2; attention modules return (output, weights)."""
    tensor = output[0] if isinstance(output, tuple | list) else output
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"hooked module returned {type(output).__name__}, not a tensor")
    return tensor


def with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """`output` with its hidden-state tensor replaced (a new tuple; nothing is mutated)."""
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    if isinstance(output, list):
        return [hidden, *output[1:]]
    return hidden


def _checked_vector(model: nn.Module, vector: torch.Tensor, scale: float) -> torch.Tensor:
    d_model = int(model.get_input_embeddings().weight.shape[1])  # type: ignore[operator]
    if vector.ndim != 1 or vector.shape[0] != d_model:
        raise ProbewatchError(
            f"steering vector has shape {tuple(vector.shape)}; the model's d_model is {d_model}",
            hint="use a vector extracted from this model",
        )
    if not math.isfinite(scale) or not bool(torch.isfinite(vector).all()):
        raise ProbewatchError("steering strength and vector must be finite numbers")
    param = next(model.parameters())
    return (vector.to(device=param.device, dtype=param.dtype) * scale).detach()


@contextmanager
def add_vector(
    model: nn.Module, site: str, vector: torch.Tensor, scale: float = 1.0
) -> Iterator[None]:
    """Add `scale * vector` to the output of `site` at every position while inside the block."""
    target = parse_site(site, len(layer_list(model)))
    module = resolve_module(model, target)
    delta = _checked_vector(model, vector, scale)

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        return with_hidden(output, hidden_of(output) + delta)

    with registered_hooks([(module, hook)]):
        yield


@contextmanager
def registered_hooks(pairs: Sequence[tuple[nn.Module, Hook]]) -> Iterator[None]:
    """Register forward hooks in order and remove exactly these handles on exit, also when
    registering, or the block, raises."""
    handles: list[RemovableHandle] = []
    try:
        for module, hook in pairs:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
