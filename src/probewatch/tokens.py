"""Turning text and chat conversations into padded batches with a mask of the tokens of interest.

A chat's tokens of interest are its final message's content: the template is rendered
to text, the message's character span is located in it, and tokens overlapping the span are
marked using the tokenizer's offsets. This works for any chat template, with or without
`{% generation %}` markers.

Given character spans per row (positions="span": the wrong entity of a hallucinated answer),
the mask marks only the tokens overlapping those spans instead; a chat's spans count from the
start of its final message's content, a text's from the start of the text.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from probewatch.errors import ProbewatchError

Message = dict[str, str]
Span = tuple[int, int]


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long, 1 for real tokens
    token_mask: torch.Tensor | None  # [B, T] bool, the positions of interest, or None


def prompt_text(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str | None:
    """The conversation rendered with the chat template and the generation prompt (the point
    where the model's answer starts), or None when the tokenizer has no chat template."""
    if getattr(tokenizer, "chat_template", None) is None:
        return None
    return str(
        tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )
    )


def render_chat(tokenizer: Any, messages: Sequence[Message]) -> tuple[str, Span]:
    """Render a conversation with the model's chat template; return it and the span of the
    final message's content.

    A conversation that ends with an assistant message is rendered whole (the span is the
    response); one that ends with a user message gets the generation prompt appended, so its
    last token is where the model would start answering (the span is the request).
    """
    if not messages:
        raise ProbewatchError("an empty conversation", hint="give at least one message")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ProbewatchError(
            "this model's tokenizer has no chat template",
            hint="use plain text examples, or a chat model such as the default SmolLM2-Instruct",
        )
    ends_with_response = messages[-1].get("role") == "assistant"
    if not ends_with_response:
        text = prompt_text(tokenizer, messages) or ""
        prefix = ""
    else:
        text = tokenizer.apply_chat_template(list(messages), tokenize=False)
        prefix = (prompt_text(tokenizer, messages[:-1]) or "") if len(messages) > 1 else ""
    content = messages[-1]["content"]
    start = text.find(content, len(prefix) if text.startswith(prefix) else 0)
    if start < 0:
        raise ProbewatchError("the chat template altered the assistant message; cannot locate it")
    return text, (start, start + len(content))


def overlap_mask(offsets: torch.Tensor, spans: Sequence[Span], base: int = 0) -> torch.Tensor:
    """[T] bool: the tokens whose character `offsets` ([T, 2], end exclusive) overlap any of
    `spans`, each shifted by `base`. A special token's empty (0, 0) offset overlaps nothing."""
    mask = torch.zeros(offsets.shape[0], dtype=torch.bool)
    for start, end in spans:
        mask |= (offsets[:, 0] < base + end) & (offsets[:, 1] > base + start)
    return mask


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    add_special_tokens: bool = True,
    max_length: int | None = None,
    row_offset: int = 0,
    spans: Sequence[Sequence[Span]] | None = None,
) -> Batch:
    """Tokenize and right-pad `texts`; a row over `max_length` tokens is refused (rows are
    numbered from `row_offset` in the message). With `spans` (character spans per row, into
    its text), `token_mask` marks the tokens overlapping them."""
    encoded = _tokenize(tokenizer, texts, add_special_tokens, offsets=spans is not None)
    attention = encoded["attention_mask"]
    _check_length(attention, max_length, row_offset)
    if spans is None:
        return Batch(encoded["input_ids"], attention, None)
    bases = [0] * len(texts)
    return Batch(encoded["input_ids"], attention, _span_mask(encoded, spans, bases))


def encode_chats(
    tokenizer: Any,
    conversations: Sequence[Sequence[Message]],
    max_length: int | None = None,
    row_offset: int = 0,
    spans: Sequence[Sequence[Span]] | None = None,
) -> Batch:
    """Encode conversations; `token_mask` marks the final message's tokens (see render_chat),
    or with `spans` (character spans per row, into the final message's content) the tokens
    overlapping them."""
    rendered = [render_chat(tokenizer, conv) for conv in conversations]
    # The template already contains BOS and role markers: add no special tokens again.
    encoded = _tokenize(tokenizer, [text for text, _ in rendered], False, offsets=True)
    _check_length(encoded["attention_mask"], max_length, row_offset)
    if spans is None:
        spans = [[(0, end - start)] for _, (start, end) in rendered]
    bases = [start for _, (start, _) in rendered]
    return Batch(encoded["input_ids"], encoded["attention_mask"], _span_mask(encoded, spans, bases))


def _span_mask(encoded: Any, spans: Sequence[Sequence[Span]], bases: Sequence[int]) -> torch.Tensor:
    """[B, T] bool: each row's real tokens overlapping its spans (shifted by its base)."""
    if len(spans) != len(bases):
        raise ProbewatchError(f"{len(spans)} rows of spans for {len(bases)} rows of text")
    offsets = encoded.pop("offset_mapping")  # [B, T, 2]
    attention = encoded["attention_mask"].bool()
    rows = [overlap_mask(offsets[row], spans[row], bases[row]) for row in range(len(bases))]
    return torch.stack(rows) & attention


def _tokenize(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool, offsets: bool) -> Any:
    return tokenizer(
        list(texts),
        add_special_tokens=add_special_tokens,
        return_offsets_mapping=offsets,
        padding=True,
        return_tensors="pt",
    )


def _check_length(attention: torch.Tensor, max_length: int | None, row_offset: int) -> None:
    lengths = attention.sum(dim=1)
    if max_length is not None and int(lengths.max()) > max_length:
        row = int(lengths.argmax())
        raise ProbewatchError(
            f"row {row + row_offset} is {int(lengths[row])} tokens long, over the limit of "
            f"{max_length}",
            hint="shorten or drop that row, or raise max_length if the model allows it",
        )
