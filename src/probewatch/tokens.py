"""Turning text and chat conversations into padded batches with a mask of the tokens of interest.

A chat's tokens of interest are its final message's content: the template is rendered
to text, the message's character span is located in it, and tokens overlapping the span are
marked using the tokenizer's offsets. This works for any chat template, with or without
`{% generation %}` markers.
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


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    add_special_tokens: bool = True,
    max_length: int | None = None,
    row_offset: int = 0,
) -> Batch:
    """Tokenize and right-pad `texts`; a row over `max_length` tokens is refused (rows are
    numbered from `row_offset` in the message)."""
    encoded = _tokenize(tokenizer, texts, add_special_tokens, offsets=False)
    _check_length(encoded["attention_mask"], max_length, row_offset)
    return Batch(encoded["input_ids"], encoded["attention_mask"], None)


def encode_chats(
    tokenizer: Any,
    conversations: Sequence[Sequence[Message]],
    max_length: int | None = None,
    row_offset: int = 0,
) -> Batch:
    """Encode conversations; `token_mask` marks the final message's tokens (see render_chat)."""
    rendered = [render_chat(tokenizer, conv) for conv in conversations]
    # The template already contains BOS and role markers: add no special tokens again.
    encoded = _tokenize(tokenizer, [text for text, _ in rendered], False, offsets=True)
    attention = encoded["attention_mask"]
    _check_length(attention, max_length, row_offset)
    offsets = encoded.pop("offset_mapping")  # [B, T, 2]
    token_mask = torch.zeros_like(encoded["input_ids"], dtype=torch.bool)
    for row, (_, (start, end)) in enumerate(rendered):
        overlap = (offsets[row, :, 0] < end) & (offsets[row, :, 1] > start)
        token_mask[row] |= overlap & attention[row].bool()
    return Batch(encoded["input_ids"], attention, token_mask)


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
