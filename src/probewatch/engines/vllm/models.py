"""vLLM model classes that score probes and steer inside the forward pass (imports vLLM).

Each class subclasses vLLM's own implementation of a family and adds, from the engine's
`additional_config["probewatch"]` (a `Layout`):

- taps: the backbone returns the residual stream at the tapped layers as EAGLE-3
  aux hidden states (Llama and Qwen2 have the interface; Gemma 3 is built with a backbone
  subclass whose forward collects them the same way);
- fused probes: `addmm(bias, cat(taps), weight)` written into `pw_scores[:n]`, a buffer
  whose address never changes, so compiled graphs (and CUDA graphs) keep pointing at it and
  weights can be replaced in place without recompiling; with `capture`, the tapped rows too;
- steering: after each steerable layer, `pw_steer[:n]` (per-row deltas, zero for rows of
  unsteered requests) is added to the residual. The worker fills those rows between the
  runner's input preparation and the forward.

Forward hooks are not used: under vLLM's default compiled mode they are silently never
called.
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from types import ModuleType
from typing import Any

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import get_pp_group
from vllm.model_executor.models import gemma3
from vllm.model_executor.models.gemma3 import Gemma3ForCausalLM, Gemma3Model
from vllm.model_executor.models.interfaces import EagleModelMixin
from vllm.model_executor.models.llama import LlamaForCausalLM
from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM
from vllm.model_executor.models.utils import PPMissingLayer
from vllm.sequence import IntermediateTensors

from probewatch.engines.vllm.layout import Layout

LAYOUT_KEY = "probewatch"
_STEERED: dict[type, type] = {}


def _steered_class(base: type[nn.Module]) -> type[nn.Module]:
    """A subclass of a decoder layer that adds this layer's steering rows to its residual
    output (vLLM layers return (hidden, residual); their sum is the stream after the block)."""
    if base not in _STEERED:

        def forward(self: Any, positions: Any, hidden_states: Any, residual: Any, **kw: Any) -> Any:
            hidden_states, residual = base.forward(self, positions, hidden_states, residual, **kw)
            return hidden_states, residual + self.pw_steer[: residual.shape[0]]

        _STEERED[base] = type(f"Steered{base.__name__}", (base,), {"forward": forward})
    return _STEERED[base]


class ProbewatchMixin:
    """The probe/steer buffers and the scoring step shared by every family. It comes first
    in each class's bases, so its __init__ and forward wrap the family's own."""

    model: Any
    pw_layout: Layout
    # (module, name, class): the family's __init__ builds its backbone by that module-level
    # name; ours (which adds the aux taps) is built in its place.
    _pw_backbone: tuple[ModuleType, str, type] | None = None

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        with _building(self._pw_backbone):
            super().__init__(vllm_config=vllm_config, prefix=prefix)  # type: ignore[call-arg]
        self._pw_setup(vllm_config)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        args = (input_ids, positions, intermediate_tensors, inputs_embeds)
        output = self.model(*args, **kwargs) if kwargs else self.model(*args)
        return self._pw_score(output)

    def _pw_setup(self, vllm_config: VllmConfig) -> None:
        layout = Layout.from_dict(vllm_config.additional_config[LAYOUT_KEY])
        self.pw_layout = layout
        if layout.aux_layers:
            self.model._set_aux_hidden_state_layers(layout.aux_layers)
        rows = vllm_config.scheduler_config.max_num_batched_tokens
        # Probes score in float32 whatever the model's dtype: vLLM builds the model under its
        # dtype as torch's default, so a bfloat16 model would otherwise get bfloat16 buffers.
        f32 = torch.float32
        buffers = {
            "pw_weight": torch.zeros(max(layout.width, 1), layout.k_max, dtype=f32),
            "pw_bias": torch.zeros(layout.k_max, dtype=f32),
            "pw_scores": torch.zeros(rows, layout.k_max, dtype=f32),
            "pw_rows": torch.zeros(rows if layout.capture else 1, max(layout.width, 1), dtype=f32),
        }
        module: nn.Module = self  # type: ignore[assignment]
        for name, value in buffers.items():
            module.register_buffer(name, value, persistent=False)
        dtype = vllm_config.model_config.dtype
        for index in layout.steer_layers:
            layer = self.model.layers[index]
            if isinstance(layer, PPMissingLayer):  # another pipeline stage holds it
                continue
            layer.__class__ = _steered_class(type(layer))
            layer.register_buffer(
                "pw_steer", torch.zeros(rows, layout.d_model, dtype=dtype), persistent=False
            )

    def _pw_score(self, output: Any) -> Any:
        if isinstance(output, IntermediateTensors):  # not the last pipeline stage
            return output
        hidden, aux = output if isinstance(output, tuple) else (output, [])
        layout = self.pw_layout
        if not layout.sites:
            return hidden
        taps = [*aux, hidden] if layout.taps_final else list(aux)
        x = (torch.cat(taps, dim=1) if len(taps) > 1 else taps[0]).float()
        n = x.shape[0]
        module: Any = self
        torch.addmm(module.pw_bias, x, module.pw_weight, out=module.pw_scores[:n])
        if layout.capture:
            module.pw_rows[:n].copy_(x)
        return hidden

    def steer_buffers(self) -> dict[int, torch.Tensor]:
        """layer -> its [rows, d] steering buffer (on this pipeline stage)."""
        return {
            i: self.model.layers[i].pw_steer
            for i in self.pw_layout.steer_layers
            if hasattr(self.model.layers[i], "pw_steer")
        }


@contextmanager
def _building(backbone: tuple[ModuleType, str, type] | None) -> Iterator[None]:
    """While the family's __init__ runs, its module's backbone name means our subclass.

    Built as our class, not swapped in afterwards: vLLM's compile wrapper binds
    `self.forward` when the backbone is constructed and compiles that, so after a swap the
    compiled graph still ran the family's own forward (no taps: Gemma 3 failed at its first
    dummy run with an empty tap list; eager mode hid it)."""
    if backbone is None:
        yield
        return
    module, name, ours = backbone
    original = getattr(module, name)
    setattr(module, name, ours)
    try:
        yield
    finally:
        setattr(module, name, original)


class _TappedGemma3Model(Gemma3Model, EagleModelMixin):
    """Gemma3Model whose forward also collects aux hidden states, as LlamaModel's does."""

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        pp = get_pp_group()
        if pp.is_first_rank:
            hidden = inputs_embeds if inputs_embeds is not None else self.embed_input_ids(input_ids)
            residual = None
        else:
            assert intermediate_tensors is not None
            hidden = intermediate_tensors["hidden_states"]
            residual = intermediate_tensors["residual"]
        remote = self.collect_remote_aux_hidden_states(intermediate_tensors)
        aux: list[torch.Tensor] = []
        if pp.is_first_rank:
            self._maybe_add_hidden_state(aux, self.start_layer, hidden, residual)
        layers: Iterable[Any] = islice(self.layers, self.start_layer, self.end_layer)
        for idx, layer in enumerate(layers, start=self.start_layer):
            hidden, residual = layer(positions, hidden, residual, **kwargs)
            self._maybe_add_hidden_state(aux, idx + 1, hidden, residual)
        if not pp.is_last_rank:
            packed = self.pack_local_aux_hidden_states(aux)
            return IntermediateTensors({"hidden_states": hidden, "residual": residual, **packed})
        hidden, _ = self.norm(hidden, residual)
        aux = remote + aux
        return (hidden, aux) if aux else hidden


class ProbewatchLlamaForCausalLM(ProbewatchMixin, LlamaForCausalLM):
    """Llama family (SmolLM2, Llama 2/3 and the checkpoints vLLM maps to Llama)."""


class ProbewatchQwen2ForCausalLM(ProbewatchMixin, Qwen2ForCausalLM):
    """Qwen 2 / 2.5 (e.g. Qwen2.5-Coder)."""


class ProbewatchGemma3ForCausalLM(ProbewatchMixin, Gemma3ForCausalLM):
    """Gemma 3 text models (gemma3-270m)."""

    _pw_backbone = (gemma3, "Gemma3Model", _TappedGemma3Model)
