"""Span-level scoring: max and mean of each example's span-token scores, AUROC over examples;
end to end, a dataset whose card asks for span positions trains a span probe by default."""

import pytest
import torch

from probewatch.config import EvalOptions, ProbeSpec
from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.models.loading import LoadedModel
from probewatch.store import StoredSite
from probewatch.training import BinaryScores, train
from probewatch.training.evaluate import evaluate
from probewatch.training.spans import span_scores

# Two positive spans whose one confident token gives them away, two negative spans that are
# uniformly lukewarm: max separates them perfectly, mean ranks them the wrong way round.
TOKENS = {
    0: (1.0, [3.0, -2.0, -2.0]),  # max 3, mean -1/3
    1: (1.0, [2.0, -1.0]),  # max 2, mean 1/2
    2: (0.0, [1.0, 1.0, 1.0]),  # max 1, mean 1
    3: (0.0, [0.5, 0.5]),  # max 1/2, mean 1/2
}


def _constructed() -> tuple[torch.Tensor, StoredSite]:
    rows = [(ex, t, score) for ex, (_, scores) in TOKENS.items() for t, score in enumerate(scores)]
    rows = rows[::-1]  # stored order need not be example order
    index = torch.tensor([ex for ex, _, _ in rows])
    stored = StoredSite(
        acts=torch.zeros(len(rows), 2),
        example_index=index,
        token_index=torch.tensor([t for _, t, _ in rows]),
        label=torch.tensor([TOKENS[ex][0] for ex, _, _ in rows]),
        split=torch.ones(len(rows), dtype=torch.int8),
    )
    return torch.tensor([score for _, _, score in rows]), stored


def test_span_auroc_reduces_each_examples_span_tokens_before_ranking() -> None:
    token_scores, stored = _constructed()
    result = span_scores(token_scores, stored, n_boot=200)
    assert (result.n_examples, result.n_tokens) == (4, 10)
    top, mean = result.reductions["max"], result.reductions["mean"]
    assert top.auroc == 1.0 and (top.n, top.n_positive) == (4, 2)
    # Positive means -1/3 and 1/2 against negative means 1 and 1/2: one tie of four pairs.
    assert mean.auroc == pytest.approx(0.125)
    assert top.auroc_ci_low <= top.auroc <= top.auroc_ci_high
    card = result.to_dict()
    assert card["max"]["auroc"] == 1.0 and card["n_examples"] == 4
    assert "max AUROC 1.000" in result.line() and "2.5 tokens each" in result.line()


ENTITIES = {1.0: ["Rome", "Oslo", "Bern", "Kiev"], 0.0: ["Lima", "Pune", "Riga", "Baku"]}


def _answers(n: int = 80) -> Dataset:
    """Chats whose answers name an entity (label: which list it is from); the rest of the
    answer is the same for both labels, so only the span carries the label."""
    examples = []
    for i in range(n):
        label = float(i % 2)
        entity = ENTITIES[label][(i // 2) % 4]
        answer = f"Number {i} is in {entity}, I believe."
        start = answer.index(entity)
        chat = ({"role": "user", "content": f"Where is number {i}?"},)
        examples.append(
            Example(
                text=answer,
                label=label,
                split="test" if i % 5 == 0 else "train",
                group=str(i),
                messages=(*chat, {"role": "assistant", "content": answer}),
                meta={"answer_span": [start, start + len(entity)]},
            )
        )
    card = DatasetCard("answers", "toy", "tests", "none", "by hand", "by item", positions="span")
    return Dataset(card, examples)


def test_a_card_with_span_positions_trains_a_span_probe_scored_per_span(
    tiny: LoadedModel,
) -> None:
    dataset = _answers()
    spec = ProbeSpec(sites="resid.1", n_boot=50, shortcut_audit=False)
    result = train(tiny, dataset, spec, progress=False)
    assert isinstance(result.metrics, BinaryScores) and result.metrics.span is not None
    card = result.artifact.card
    assert card["positions"] == "span"  # from the dataset card: the spec named none
    stored = result.store.load("resid.1")
    assert stored.acts.shape[0] == 4 * len(dataset.examples)  # the 4 entity tokens of each
    span = card["metrics"]["span"]
    assert span["n_examples"] == len(dataset.split("test"))
    # The training aggregator is the mean, so its AUROC is the span-level mean's.
    assert span["mean"]["auroc"] == pytest.approx(result.metrics.test.auroc)
    assert 0.0 <= span["max"]["auroc"] <= 1.0
    assert "span level (16 test spans" in result.report()
    # Scoring the saved probe again reads the same span tokens.
    again = evaluate(result.artifact, tiny, dataset, EvalOptions(n_boot=20), progress=False)
    assert again.metrics.auroc == pytest.approx(result.metrics.test.auroc)
    # The spec's own positions win over the card's, and a mask probe has no span section.
    whole = train(
        tiny, dataset, ProbeSpec.from_dict({**spec.to_dict(), "positions": "mask"}), progress=False
    )
    assert whole.artifact.card["positions"] == "mask"
    assert "span" not in whole.artifact.card["metrics"]
