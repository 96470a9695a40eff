"""Token masks from character spans: a chat's spans count from its final message's content, a
text's from its start; the overlap rule is the one for the whole final message too."""

import torch

from probewatch.tokens import encode, encode_chats, overlap_mask
from tests.helpers import tiny_tokenizer

CHATS = [
    [
        {"role": "user", "content": "What is the capital of Peru?"},
        {"role": "assistant", "content": "The capital of Peru is Lima."},
    ],
    [
        {"role": "user", "content": "Which continent is Chad in?"},
        {"role": "assistant", "content": "Chad is in Asia, I think."},
    ],
]


def _picked(batch_ids: torch.Tensor, mask: torch.Tensor) -> str:
    return str(tiny_tokenizer().decode(batch_ids[mask]))


def test_chat_spans_count_from_the_final_message_content() -> None:
    tokenizer = tiny_tokenizer()
    spans = [[(23, 27)], [(0, 4), (11, 15)]]  # "Lima"; "Chad" and "Asia"
    batch = encode_chats(tokenizer, CHATS, spans=spans)
    assert batch.token_mask is not None
    assert _picked(batch.input_ids[0], batch.token_mask[0]) == "Lima"
    assert _picked(batch.input_ids[1], batch.token_mask[1]) == "ChadAsia"
    # Nothing of the prompt or the template is selected, and padding never is.
    assert not (batch.token_mask & ~batch.attention_mask.bool()).any()
    whole = encode_chats(tokenizer, CHATS)
    assert whole.token_mask is not None
    assert (batch.token_mask <= whole.token_mask).all()  # span tokens are answer tokens
    assert _picked(whole.input_ids[0], whole.token_mask[0]) == CHATS[0][1]["content"]


def test_text_spans_count_from_the_start_of_the_text() -> None:
    tokenizer = tiny_tokenizer()
    texts = ["Paris is in France.", "No span here but one: Lyon"]
    batch = encode(tokenizer, texts, spans=[[(0, 5)], [(22, 26)]])
    assert batch.token_mask is not None
    assert _picked(batch.input_ids[0], batch.token_mask[0]) == "Paris"
    assert _picked(batch.input_ids[1], batch.token_mask[1]) == "Lyon"
    assert encode(tokenizer, texts).token_mask is None  # no spans: no mask


def test_a_token_overlapping_a_span_edge_is_selected() -> None:
    offsets = torch.tensor([[0, 0], [0, 3], [3, 8], [8, 9]])  # a special token, then three
    assert overlap_mask(offsets, [(4, 6)]).tolist() == [False, False, True, False]
    assert overlap_mask(offsets, [(2, 4)]).tolist() == [False, True, True, False]
    assert overlap_mask(offsets, [(0, 2)], base=7).tolist() == [False, False, True, True]
    assert overlap_mask(offsets, []).tolist() == [False] * 4
