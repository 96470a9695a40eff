"""Generation: monitored (8 probes on 3 sites) vs unmonitored, and our decode loop vs plain
`transformers` `generate` on the same prompts (greedy, same number of new tokens)."""

from collections.abc import Sequence
from typing import Any

import torch

from benchmarks.common import interleaved, speed_ratio
from benchmarks.workloads import Chat, chats, monitored
from probewatch.models.loading import LoadedModel
from probewatch.monitor import Monitor


def _monitor(loaded: LoadedModel, n_probes: int) -> Monitor:
    monitor = Monitor(loaded, monitored(loaded, n_probes) if n_probes else [])
    monitor.stop_ids = set()  # always generate the full budget: equal work on every side
    return monitor


def _hf_inputs(loaded: LoadedModel, conversations: Sequence[Chat]) -> dict[str, torch.Tensor]:
    """The same left-padded prompt tokens the monitor builds (chat template, no extra BOS)."""
    tok = loaded.tokenizer
    texts = [
        tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
        for c in conversations
    ]
    encoded = tok(
        texts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt"
    )
    return {k: v.to(loaded.device) for k, v in encoded.items()}


def hf_generate(
    loaded: LoadedModel, inputs: dict[str, torch.Tensor], tokens: int
) -> list[list[int]]:
    with torch.no_grad():
        out = loaded.model.generate(  # type: ignore[operator]
            **inputs,
            max_new_tokens=tokens,
            min_new_tokens=tokens,  # no early stop: both sides make exactly `tokens`
            do_sample=False,
            pad_token_id=loaded.tokenizer.pad_token_id,
        )
    prompt = inputs["input_ids"].shape[1]
    return [row[prompt:].tolist() for row in out]


def ours_generate(monitor: Monitor, conversations: Sequence[Chat], tokens: int) -> list[list[int]]:
    responses = monitor.generate(conversations, max_new_tokens=tokens)
    return [[step.token_id for step in r.tokens] for r in responses]


def bench_monitor_overhead(
    loaded: LoadedModel, n_conversations: int, tokens: int, rounds: int
) -> dict[str, Any]:
    conversations = chats(n_conversations)
    bare, probed = _monitor(loaded, 0), _monitor(loaded, 8)
    times = interleaved(
        {
            "unmonitored": lambda: bare.generate(conversations, max_new_tokens=tokens),
            "monitored": lambda: probed.generate(conversations, max_new_tokens=tokens),
        },
        rounds,
    )
    produced = tokens * n_conversations
    return {
        "conversations": n_conversations,
        "new_tokens_each": tokens,
        "rounds": rounds,
        "seconds": times,
        "unmonitored_tok_s": produced / min(times["unmonitored"]),
        "monitored_tok_s": produced / min(times["monitored"]),
        "ratio": speed_ratio(times, "monitored", "unmonitored"),
    }


def bench_vs_hf(
    loaded: LoadedModel, n_conversations: int, tokens: int, rounds: int
) -> dict[str, Any]:
    conversations = chats(n_conversations)
    monitor = _monitor(loaded, 0)
    inputs = _hf_inputs(loaded, conversations)
    ours = ours_generate(monitor, conversations, tokens)
    theirs = hf_generate(loaded, inputs, tokens)
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    times = interleaved(
        {
            "hf_generate": lambda: hf_generate(loaded, inputs, tokens),
            "ours": lambda: ours_generate(monitor, conversations, tokens),
        },
        rounds,
    )
    produced = tokens * n_conversations
    return {
        "conversations": n_conversations,
        "new_tokens_each": tokens,
        "rounds": rounds,
        "seconds": times,
        "hf_tok_s": produced / min(times["hf_generate"]),
        "ours_tok_s": produced / min(times["ours"]),
        "ratio": speed_ratio(times, "ours", "hf_generate"),
        "greedy_tokens_identical_rows": same,
    }
