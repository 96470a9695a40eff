import pytest
import torch

from probewatch.capture import ActivationCapture, select_positions
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.sites import layer_list
from probewatch.tokens import Batch, encode, encode_chats
from tests.helpers import tiny_model

TEXTS = ["The city of Paris is in France.", "Hi", "A somewhat longer sentence, with commas."]


def _hidden_states(loaded: LoadedModel, batch: Batch) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = loaded.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=True,
        )
    return tuple(out.hidden_states)


def test_captured_sites_equal_the_models_own_hidden_states(any_tiny: LoadedModel) -> None:
    batch = encode(any_tiny.tokenizer, TEXTS)
    hidden = _hidden_states(any_tiny, batch)
    n = len(layer_list(any_tiny.model))
    with ActivationCapture(any_tiny.model, "embed,resid.*,final_norm", positions="all") as cap:
        captured = cap.run(batch)
    rows, cols = captured.example_index, captured.token_index
    assert rows.shape[0] == int(batch.attention_mask.sum())
    torch.testing.assert_close(captured.acts["embed"], hidden[0][rows, cols])
    for i in range(n - 1):
        torch.testing.assert_close(captured.acts[f"resid.{i}"], hidden[i + 1][rows, cols])
    # HF's last hidden state has the final norm applied: that is the final_norm site.
    torch.testing.assert_close(captured.acts["final_norm"], hidden[n][rows, cols])


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_batched_equals_unbatched(any_tiny: LoadedModel, padding_side: str) -> None:
    any_tiny.tokenizer.padding_side = padding_side
    sites = "resid.0,attn_out.1,mlp_out.2,resid.3"
    with ActivationCapture(any_tiny.model, sites, positions="last") as cap:
        batched = cap.run(encode(any_tiny.tokenizer, TEXTS))
        singles = [cap.run(encode(any_tiny.tokenizer, [t])) for t in TEXTS]
    for name in cap.site_names:
        alone = torch.cat([s.acts[name] for s in singles])
        torch.testing.assert_close(batched.acts[name], alone, atol=1e-5, rtol=1e-4)


def test_hooks_are_removed_even_when_the_forward_pass_raises(tiny: LoadedModel) -> None:
    modules = list(tiny.model.modules())
    before = sum(len(m._forward_hooks) for m in modules)
    bad = Batch(torch.tensor([[1, 2, 10_000]]), torch.ones(1, 3, dtype=torch.long), None)
    with pytest.raises(IndexError), ActivationCapture(tiny.model, "resid.*") as cap:
        cap.run(bad)  # token id beyond the vocabulary
    assert sum(len(m._forward_hooks) for m in modules) == before
    # ...and the model works normally afterwards.
    tiny.model(torch.tensor([[1, 2, 3]]))


def test_stop_early_skips_the_layers_after_the_deepest_site(tiny: LoadedModel) -> None:
    calls = {"last_block": 0}
    last = layer_list(tiny.model)[-1]
    handle = last.register_forward_hook(lambda *_: calls.__setitem__("last_block", 1))
    try:
        with ActivationCapture(tiny.model, "resid.1") as cap:
            cap.run(encode(tiny.tokenizer, TEXTS))
        assert calls["last_block"] == 0
        with ActivationCapture(tiny.model, "resid.1", stop_early=False) as cap:
            cap.run(encode(tiny.tokenizer, TEXTS))
        assert calls["last_block"] == 1
    finally:
        handle.remove()


def test_response_mask_selects_exactly_the_assistant_tokens(tiny: LoadedModel) -> None:
    chats = [
        [
            {"role": "user", "content": "Where is Lyon?"},
            {"role": "assistant", "content": "France."},
        ],
        [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "It is 4, I think."},
        ],
    ]
    batch = encode_chats(tiny.tokenizer, chats)
    assert batch.token_mask is not None
    for row, chat in enumerate(chats):
        picked = batch.input_ids[row][batch.token_mask[row]]
        assert tiny.tokenizer.decode(picked) == chat[-1]["content"]
    with ActivationCapture(tiny.model, "resid.2", positions="mask") as cap:
        captured = cap.run(batch)
    assert captured.acts["resid.2"].shape[0] == int(batch.token_mask.sum())


def test_a_prompt_only_chat_ends_with_the_generation_prompt(tiny: LoadedModel) -> None:
    batch = encode_chats(tiny.tokenizer, [[{"role": "user", "content": "Tell me a joke"}]])
    text = tiny.tokenizer.decode(batch.input_ids[0])
    assert text.endswith("<|assistant|>")
    assert batch.token_mask is not None
    assert tiny.tokenizer.decode(batch.input_ids[0][batch.token_mask[0]]) == "Tell me a joke"


def test_positions_come_from_the_attention_mask_not_the_padding_side() -> None:
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert select_positions(right, "last")[1].tolist() == [2, 3]
    assert select_positions(left, "last")[1].tolist() == [3, 3]
    with pytest.raises(ProbewatchError, match="token mask"):
        select_positions(right, "mask")
    with pytest.raises(ProbewatchError, match="unknown positions"):
        ActivationCapture(tiny_model().model, "resid.0", positions="first")
