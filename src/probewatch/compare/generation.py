"""Each side's own replies to the prompts, as token ids: greedy, or sampled with a seed (so an
A-vs-A comparison can be run under sampling noise). Never cached: a side may be a model under
an intervention, whose weights fingerprint is the unmodified model's."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from probewatch.compare.forward import Side
from probewatch.compare.spec import CompareSpec
from probewatch.data.generated.common import stable_hash
from probewatch.data.generated.generate import render_prompt, stop_token_ids
from probewatch.tokens import Message


@dataclass(frozen=True)
class Reply:
    prompt_ids: tuple[int, ...]
    reply_ids: tuple[int, ...]  # up to (not including) the first stop token
    text: str


def prompt_ids(side: Side, chats: Sequence[Sequence[Message]]) -> list[list[int]]:
    tokenizer = side.loaded.tokenizer
    rendered = [render_prompt(tokenizer, chat) for chat in chats]
    return [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rendered]


@torch.no_grad()
def replies(side: Side, prompts: Sequence[list[int]], spec: CompareSpec) -> list[Reply]:
    """Replies of `side` to each prompt (token ids), in order, batched by similar length;
    greedy, or sampled at `spec.temperature` with `spec.seed`."""
    batch_size, temperature, seed = spec.batch_size, spec.temperature, spec.seed
    tokenizer = side.loaded.tokenizer
    stops = stop_token_ids(tokenizer)
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0])
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    out: dict[int, Reply] = {}
    device = side.loaded.device
    with side.active():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in rows)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in rows])
            mask = (
                torch.arange(width)
                >= width - torch.tensor([len(prompts[i]) for i in rows])[:, None]
            ).long()
            # Seeded per side and batch: the same prompts and seed give the same samples, and
            # two sides (A vs A under sampling) draw independent samples.
            torch.manual_seed(stable_hash("compare-sample", seed, side.label, start))
            sampled = temperature > 0
            generated = side.loaded.model.generate(  # type: ignore[operator]
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=spec.max_new_tokens,
                do_sample=sampled,
                temperature=temperature if sampled else None,
                top_p=None,
                top_k=None,
                eos_token_id=stops,
                pad_token_id=pad,
            )
            for row, index in enumerate(rows):
                new = generated[row, width:].tolist()
                cut = next((k for k, t in enumerate(new) if t in stops), len(new))
                tokens = tuple(new[:cut])
                text = tokenizer.decode(list(tokens), skip_special_tokens=True).strip()
                out[index] = Reply(tuple(prompts[index]), tokens, text)
    return [out[i] for i in range(len(prompts))]
