"""Deterministic greedy generation with an on-disk cache, for datasets labelled by what the
model says.

Conversations are rendered with the chat template, left-padded by hand (the tokenizer's own
padding side is right, for capture, and is left untouched) and decoded greedily in batches of
similar length. The responses are cached under
`cache_dir()/generations/<model>-<fingerprint[:8]>/<sha>.jsonl`, where the sha covers the
rendered prompts and the settings, so rebuilding a dataset does not generate again.

Batch composition changes padding, and padding can change float rounding; the order of
batches is a pure function of the prompts, so the same prompts always give the same bytes.
"""

import hashlib
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.paths import atomic_text, cache_dir
from probewatch.tokens import prompt_text

log = logging.getLogger(__name__)

Conversation = Sequence[Mapping[str, str]]
CACHE_FORMAT = 1
STOP_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>")


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 48
    batch_size: int = 16

    def to_json(self) -> dict[str, Any]:
        return {"decoding": "greedy", **asdict(self)}


@dataclass(frozen=True)
class Generation:
    response: str
    finished: bool  # False when max_new_tokens cut the response short
    n_tokens: int


def generated_by(loaded: LoadedModel, settings: GenerationSettings) -> dict[str, Any]:
    """Who generated a dataset's responses, and how: stored in the card and in each example."""
    return {
        "model": loaded.name,
        "fingerprint": loaded.fingerprint,
        "settings": settings.to_json(),
    }


def render_prompt(tokenizer: Any, conversation: Conversation) -> str:
    text = prompt_text(tokenizer, conversation)
    if text is None:
        raise ProbewatchError(
            "generated datasets need a chat model; this tokenizer has no chat template",
            hint="use the default model (SmolLM2-Instruct) or another instruct model",
        )
    return text


def stop_token_ids(tokenizer: Any) -> list[int]:
    """EOS plus the end-of-turn tokens of common chat templates that this vocabulary has."""
    vocab = tokenizer.get_vocab()
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    ids |= {int(vocab[t]) for t in STOP_TOKENS if t in vocab}
    if not ids:
        raise ProbewatchError("the tokenizer has no EOS token; generation would never stop")
    return sorted(ids)


def cache_path(loaded: LoadedModel, prompts: Sequence[str], settings: GenerationSettings) -> Path:
    key = json.dumps({"prompts": list(prompts), "settings": settings.to_json()}, sort_keys=True)
    sha = hashlib.sha256(key.encode()).hexdigest()[:24]
    folder = f"{_safe(loaded.name)}-{loaded.fingerprint[:8]}"
    return cache_dir() / "generations" / folder / f"{sha}.jsonl"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def generate(
    loaded: LoadedModel, conversations: Sequence[Conversation], settings: GenerationSettings
) -> list[Generation]:
    """Greedy responses to `conversations` (each ending with a user turn), from cache if there."""
    prompts = [render_prompt(loaded.tokenizer, conv) for conv in conversations]
    path = cache_path(loaded, prompts, settings)
    cached = _read_cache(path, loaded, prompts, settings)
    if cached is not None:
        return cached
    log.info("generating %d responses with %s (cache: %s)", len(prompts), loaded.name, path)
    results = _generate_uncached(loaded, prompts, settings)
    _write_cache(path, loaded, prompts, settings, results)
    return results


def _generate_uncached(
    loaded: LoadedModel, prompts: Sequence[str], settings: GenerationSettings
) -> list[Generation]:
    tokenizer = loaded.tokenizer
    stops = stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    # Similar lengths together wastes less padding; ties broken by index, so it is stable.
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    results: dict[int, Generation] = {}
    # Generating a dataset's answers is the longest silent step a user meets (an hour for a
    # 0.5B model on 2 cores): say what runs and how far it is, also in a log (every 30 s).
    bar = tqdm(
        total=len(prompts),
        desc=f"generating answers with {loaded.name} (cached after)",
        unit="answer",
        mininterval=0.1 if sys.stderr.isatty() else 30.0,
    )
    with bar:
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            results.update(_generate_batch(loaded, encoded, rows, settings, stops, pad_id))
            bar.update(len(rows))
    return [results[i] for i in range(len(prompts))]


def _generate_batch(
    loaded: LoadedModel,
    encoded: Sequence[Sequence[int]],
    rows: Sequence[int],
    settings: GenerationSettings,
    stops: Sequence[int],
    pad_id: int,
) -> dict[int, Generation]:
    """Greedy answers to the prompts `rows` (of similar lengths, left-padded), by row."""
    tokenizer = loaded.tokenizer
    device = loaded.device
    width = max(len(encoded[i]) for i in rows)
    input_ids = torch.tensor(
        [[pad_id] * (width - len(encoded[i])) + list(encoded[i]) for i in rows],
        device=device,
    )
    attention = torch.tensor(
        [[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in rows],
        device=device,
    )
    with torch.no_grad():
        out = loaded.model.generate(  # type: ignore[operator]
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=stops,
            pad_token_id=pad_id,
        )
    results = {}
    for row, index in enumerate(rows):
        new = out[row, width:].tolist()
        cut = next((k for k, t in enumerate(new) if t in stops), None)
        tokens = new if cut is None else new[:cut]
        text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        results[index] = Generation(text, finished=cut is not None, n_tokens=len(tokens))
    return results


def _read_cache(
    path: Path, loaded: LoadedModel, prompts: Sequence[str], settings: GenerationSettings
) -> list[Generation] | None:
    if not path.is_file():
        return None
    try:
        lines = path.read_text().splitlines()
        header = json.loads(lines[0])
        rows = [json.loads(line) for line in lines[1:]]
    except (OSError, ValueError, IndexError):
        log.warning("ignoring unreadable generation cache %s", path)
        return None
    expected = {**generated_by(loaded, settings), "format": CACHE_FORMAT, "n": len(prompts)}
    if header != expected or [r["prompt"] for r in rows] != list(prompts):
        log.warning("ignoring generation cache %s: it was written for other inputs", path)
        return None
    return [Generation(r["response"], bool(r["finished"]), int(r["n_tokens"])) for r in rows]


def _write_cache(
    path: Path,
    loaded: LoadedModel,
    prompts: Sequence[str],
    settings: GenerationSettings,
    results: Sequence[Generation],
) -> None:
    header = {**generated_by(loaded, settings), "format": CACHE_FORMAT, "n": len(prompts)}
    lines = [json.dumps(header, sort_keys=True)]
    lines += [
        json.dumps({"prompt": p, **asdict(g)}, sort_keys=True, ensure_ascii=False)
        for p, g in zip(prompts, results, strict=True)
    ]
    with atomic_text(path) as f:
        f.write("\n".join(lines) + "\n")
