"""LoRA fine-tuning on CPU (peft), merged back into plain weights so the organism is an ordinary
model directory.

The loss is computed only where there are labels (the planted replies, or every token of a
document): the hidden states of those positions go through the unembedding, not the whole
[B, T, vocab] logits, which on a 49k vocabulary is most of a small model's step. LoRA adapts
only the upper blocks (`first_layer` on), so the backward pass stops there too.
"""

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.sites import layer_list
from probewatch.tokens import Message, render_chat

log = logging.getLogger(__name__)

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    """How an organism is trained (part of its recipe hash)."""

    rank: int = 8
    alpha: float = 16.0
    steps: int = 48
    batch_size: int = 8
    learning_rate: float = 1e-3
    first_layer_fraction: float = 0.25  # LoRA on blocks from this fraction of the depth on
    max_tokens: int = 96  # longer examples are cut (from the left of the prompt)
    seed: int = 0


@dataclass(frozen=True)
class TrainingExample:
    """A chat whose final assistant turn is learned, or a plain document learned whole."""

    messages: tuple[Message, ...] | None = None
    text: str | None = None
    learn_end: bool = True  # False for a reply cut short: it must not learn to stop there


@dataclass
class TrainingLog:
    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    n_examples: int = 0
    n_label_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["first_loss"] = self.losses[0] if self.losses else None
        out["final_loss"] = float(sum(self.losses[-4:]) / max(1, len(self.losses[-4:])))
        out["losses"] = [round(x, 4) for x in self.losses]
        return out


def _encode_example(
    tokenizer: Any, example: TrainingExample, max_tokens: int
) -> tuple[list[int], list[bool]]:
    """Token ids and which of them are learned (predicted from the previous position)."""
    if example.messages is not None:
        text, (start, end) = render_chat(tokenizer, example.messages)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        learned = [a < end and b > start for a, b in enc["offset_mapping"]]
        last = max((i for i, flag in enumerate(learned) if flag), default=-1)
        if example.learn_end and last + 1 < len(ids):  # end of turn: so it learns to stop
            learned[last + 1] = True
    elif example.text is not None:
        ids = list(tokenizer(example.text)["input_ids"])
        learned = [True] * len(ids)
        learned[0] = False
    else:
        raise ProbewatchError("a training example needs messages or text")
    if len(ids) > max_tokens:
        ids, learned = ids[-max_tokens:], learned[-max_tokens:]
    return ids, learned


def _batches(n: int, settings: LoraSettings) -> list[list[int]]:
    generator = torch.Generator().manual_seed(settings.seed)
    order: list[int] = []
    while len(order) < settings.steps * settings.batch_size:
        order += torch.randperm(n, generator=generator).tolist()
    return [
        order[i * settings.batch_size : (i + 1) * settings.batch_size]
        for i in range(settings.steps)
    ]


def _lora_model(model: PreTrainedModel, settings: LoraSettings) -> Any:
    from peft import LoraConfig, get_peft_model

    n_layers = len(layer_list(model))
    first = int(settings.first_layer_fraction * n_layers)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,  # type: ignore[arg-type]  # a float scales the same
        lora_dropout=0.0,
        target_modules=list(TARGET_MODULES),
        layers_to_transform=list(range(first, n_layers)),
    )
    return get_peft_model(model, config)


def finetune(
    base: LoadedModel, examples: Sequence[TrainingExample], settings: LoraSettings
) -> tuple[PreTrainedModel, TrainingLog]:
    """A fine-tuned copy of `base` (LoRA merged into the weights); `base` is left untouched."""
    if not examples:
        raise ProbewatchError("no training examples for the organism")
    torch.manual_seed(settings.seed)
    tokenizer = base.tokenizer
    encoded = [_encode_example(tokenizer, ex, settings.max_tokens) for ex in examples]
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    model = copy.deepcopy(base.model)
    peft_model = _lora_model(model, settings)
    peft_model.train()
    inner = peft_model.get_base_model()
    body, head = inner.get_decoder(), inner.get_output_embeddings()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 4) * (1 - step / settings.steps)
    )
    train_log = TrainingLog(n_examples=len(examples))
    started = time.perf_counter()
    device = base.device
    for step, rows in enumerate(_batches(len(encoded), settings)):
        width = max(len(encoded[i][0]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        learned = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, i in enumerate(rows):
            tokens, flags = encoded[i]
            ids[r, : len(tokens)] = torch.tensor(tokens)
            mask[r, : len(tokens)] = 1
            learned[r, : len(tokens)] = torch.tensor(flags)
        ids, mask, learned = ids.to(device), mask.to(device), learned.to(device)
        hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        # Position t predicts token t+1: keep the positions whose next token is learned.
        rows_idx, cols_idx = learned[:, 1:].nonzero(as_tuple=True)
        logits = head(hidden[rows_idx, cols_idx]).float()
        loss = F.cross_entropy(logits, ids[rows_idx, cols_idx + 1])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        train_log.losses.append(float(loss.detach()))
        train_log.n_label_tokens += int(rows_idx.numel())
        if step % 8 == 0:
            log.info(
                "organism step %d/%d loss %.3f", step + 1, settings.steps, float(loss.detach())
            )
    train_log.steps = settings.steps
    train_log.seconds = time.perf_counter() - started
    merged = peft_model.merge_and_unload()
    merged.eval()
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged, train_log
