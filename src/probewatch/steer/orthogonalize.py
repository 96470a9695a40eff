"""Weight orthogonalization: directional ablation baked into the weights (Arditi et al. 2024).

Every matrix that writes to the residual stream is projected so its output has no component
along r̂: W ← W − r̂r̂ᵀW for the attention output and MLP down projections (and their biases),
and each embedding row e ← e − (e·r̂)r̂. The result equals hook-time ablation of the
embedding, attention and MLP outputs (see interventions.ablate_direction), with no hooks.

Supported: Llama-like families whose sublayer outputs are added to the residual stream
unnormalized (llama, mistral, qwen2, qwen3, smollm3) and GPT-2. Families with post-sublayer
norms (Gemma 2/3, OLMo 2) would re-normalize the projected output, so they are refused.
A tied unembedding is untied first (keeping its original values): ablation touches what the
blocks read, not what the unembedding reads.
"""

import hashlib
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probewatch.artifacts import ORTHOGONALIZED, artifact_directory, card_header, write_parts
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.paths import refuse_to_replace
from probewatch.sites import ARCH_TABLES, arch_table, layer_list
from probewatch.steer.directions import SteeringVector, VectorLike, unit_direction

NOTE = ORTHOGONALIZED.card_file
DIRECTION = str(ORTHOGONALIZED.tensors_file)


def _targets(model: Any) -> tuple[list[torch.Tensor], list[Any], list[Any]]:
    """(embedding weights, linear writers with weight [d_out, d_in], GPT-2 Conv1D writers),
    from the family's site table (`ArchTable.embeddings` and `.writers`)."""
    table = arch_table(model)
    if table is None or not table.writers:
        model_type = str(getattr(model.config, "model_type", ""))
        supported = ", ".join(t for t, a in ARCH_TABLES.items() if a.writers)
        raise ProbewatchError(
            f"weight orthogonalization is not supported for model type {model_type!r}",
            hint=f"supported: {supported}; use ablate_direction (hooks) instead",
        )
    embeddings = [operator.attrgetter(path)(model) for path in table.embeddings]
    writers = [operator.attrgetter(w)(b) for b in layer_list(model) for w in table.writers]
    linears = [m for m in writers if isinstance(m, nn.Linear)]
    return embeddings, linears, [m for m in writers if not isinstance(m, nn.Linear)]


def _project_rows(weight: torch.Tensor, r: torch.Tensor) -> None:
    """Rows live in the residual space: w ← w − (w·r)r."""
    weight.sub_(torch.outer(weight @ r, r))


def _project_columns(weight: torch.Tensor, r: torch.Tensor) -> None:
    """Columns live in the residual space (output = W x): W ← W − r(rᵀW)."""
    weight.sub_(torch.outer(r, r @ weight))


def _tied_output(model: Any) -> Any:
    output = model.get_output_embeddings()
    embed = model.get_input_embeddings()
    if output is not None and output.weight is embed.weight:
        return output
    return None


@contextmanager
def orthogonalized(
    loaded: LoadedModel, direction: VectorLike, site: str | None = None
) -> Iterator[None]:
    """Inside the block the model's weights are orthogonalized to the direction; on exit
    (also on error) every changed weight is copied back and a tied unembedding re-tied."""
    unit = unit_direction(loaded, direction, site)
    loaded.fingerprint  # noqa: B018  cache the original weights' fingerprint before changing them
    model: Any = loaded.model
    embeddings, linears, convs = _targets(model)
    params: list[tuple[torch.Tensor, bool]] = [(w, True) for w in embeddings]
    for module in linears:
        params.append((module.weight, False))
        if module.bias is not None:
            params.append((module.bias, True))
    for module in convs:
        params.append((module.weight, True))  # Conv1D: output = x W + b, W is [d_in, d_out]
        params.append((module.bias, True))
    saved = [p.detach().clone() for p, _ in params]
    tied = _tied_output(model)
    config = model.config
    tie_flag = getattr(config, "tie_word_embeddings", None)
    shared = tied.weight if tied is not None else None
    try:
        if tied is not None and shared is not None:
            tied.weight = nn.Parameter(shared.detach().clone(), requires_grad=False)
            config.tie_word_embeddings = False
        with torch.no_grad():
            for param, rows in params:
                r = unit.to(device=param.device, dtype=torch.float64)
                work = param.detach().double()
                if work.ndim == 1:
                    work -= (work @ r) * r
                elif rows:
                    _project_rows(work, r)
                else:
                    _project_columns(work, r)
                param.copy_(work.to(param.dtype))
        yield
    finally:
        with torch.no_grad():
            for (param, _), original in zip(params, saved, strict=True):
                param.copy_(original)
        if tied is not None and shared is not None:
            tied.weight = shared
            config.tie_word_embeddings = tie_flag


def save_orthogonalized(
    loaded: LoadedModel,
    direction: VectorLike,
    out: str | Path,
    site: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an orthogonalized copy of the model (save_pretrained + tokenizer) that
    `load_model(out)` loads like any other; `probewatch-intervention.json` records what was
    done and the direction is kept beside it in `direction.safetensors`."""
    target = refuse_to_replace(out, overwrite, instead="output directory")
    unit = unit_direction(loaded, direction, site).float().contiguous()
    card = direction.card if isinstance(direction, SteeringVector) else None
    digest = hashlib.sha256(unit.numpy().tobytes()).hexdigest()[:16]
    note: dict[str, Any] = {
        **card_header(ORTHOGONALIZED),
        "intervention": "weight_orthogonalization",
        "what": "embedding rows and the outputs of every attention o_proj and MLP down_proj "
        "(with biases) projected orthogonal to the direction; unembedding untied and unchanged",
        "reference": "Arditi et al. 2024, Refusal in Language Models Is Mediated by a Single "
        "Direction",
        "base_model": loaded.describe(),
        "direction": {"site": site or (card["sites"][0] if card else None), "sha256": digest},
        "vector_card": card,
    }

    with artifact_directory(ORTHOGONALIZED, target, overwrite) as scratch:
        with orthogonalized(loaded, unit):
            loaded.model.save_pretrained(scratch)
        loaded.tokenizer.save_pretrained(scratch)
        write_parts(ORTHOGONALIZED, scratch, {"direction": unit}, note)
    return target
