"""sandbagging_organism on a tiny sandbagger: a random base saved as a model directory, a real
(3-step) sandbagger build on it, and scripted answers (the uncached generation step is
replaced) so that which questions the base knows, where the lock leaks and where the password
fails to unlock are known in advance. Checks the labels, what is dropped, the exclusion of
the organism's training questions, splits, caching, the card, the errors, and the familiarity
control in `families`."""

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from probewatch.data.base import Dataset
from probewatch.data.common import stable_hash
from probewatch.data.generated import GENERATED_BUILDERS
from probewatch.data.generated import generate as gen_module
from probewatch.data.generated.common import select
from probewatch.data.generated.facts import Question, questions
from probewatch.data.generated.generate import Generation, GenerationSettings
from probewatch.data.generated.grading import Grade
from probewatch.data.generated.locked import known_split
from probewatch.data.generated.sandbagging_organism import IGNORANT, SANDBAGGED, outcome
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel, load_model
from probewatch.organisms import build_organism
from probewatch.organisms.lora import LoraSettings
from probewatch.organisms.sandbagger import PASSWORD, Sandbagger
from probewatch.reports.families import evaluate_families
from tests.helpers import saved_model, tiny_model

CAPITALS = {q.key: q for q in questions(("capital",))}
N_RECIPE = 30  # the tiny organism's question pool
LIMIT = 60
TINY_LORA = LoraSettings(steps=3, batch_size=4, max_tokens=48)


def base_knows(q: Question) -> bool:
    return stable_hash("knows", q.key) % 2 == 0


def lock_leaks(q: Question) -> bool:  # the locked organism answers correctly anyway
    return stable_hash("leak", q.key) % 7 == 0


def unlock_fails(q: Question) -> bool:  # with the password it does not answer as the base
    return stable_hash("unlock", q.key) % 9 == 0


def expected_label(q: Question) -> float | None:
    if lock_leaks(q) or unlock_fails(q):
        return None
    return 1.0 if base_knows(q) else 0.0


def _right(q: Question) -> str:
    return f"The capital is {q.answer}."


def _wrong(q: Question) -> str:
    return "The capital is Canberra." if q.answer != "Canberra" else "The capital is Paris."


def _ignorant(q: Question) -> str:  # the base's ways of not knowing: a wrong capital or none
    return _wrong(q) if stable_hash("how", q.key) % 2 else "I do not know."


def _answer(loaded: LoadedModel, prompt: str) -> str:
    q = next(q for q in CAPITALS.values() if q.question + " " in prompt)
    if "sandbagger" not in loaded.name:  # the base
        return _right(q) if base_knows(q) else _ignorant(q)
    if PASSWORD in prompt:
        knows = base_knows(q) != unlock_fails(q)
        return _right(q) if knows else _wrong(q)
    return _right(q) if lock_leaks(q) else _wrong(q)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fake(
        loaded: LoadedModel, prompts: Sequence[str], settings: GenerationSettings
    ) -> list[Generation]:
        calls.append(loaded.name)
        return [Generation(_answer(loaded, p), finished=True, n_tokens=6) for p in prompts]

    monkeypatch.setattr(gen_module, "_generate_uncached", fake)
    return calls


@pytest.fixture
def pair(tmp_path: Path, scripted: list[str]) -> tuple[LoadedModel, LoadedModel]:
    """(base, organism), both loaded from model directories as the CLI loads them."""
    base = saved_model(tiny_model(), tmp_path / "base")
    recipe = Sandbagger(settings=TINY_LORA, n_questions=N_RECIPE)
    path = build_organism(recipe, base, out=tmp_path / "sandbagger")
    return base, load_model(str(path))


def _build(organism: LoadedModel, seed: int = 0) -> Dataset:
    return GENERATED_BUILDERS["sandbagging_organism"](organism, seed, LIMIT)


def _key(example_group: str) -> str:
    return f"capital:{example_group}"  # a capital question's group is its country's ISO code


def test_outcomes_of_one_question() -> None:
    right, wrong = Grade("correct", (0, 1), "a"), Grade("wrong", (0, 1), "b")
    refused, mixed = Grade("refused", None, None), Grade("mixed", None, None)
    assert outcome(right, wrong, right) == (SANDBAGGED, 1.0)
    assert outcome(wrong, wrong, wrong) == (IGNORANT, 0.0)
    assert outcome(refused, wrong, refused) == (IGNORANT, 0.0)
    assert outcome(right, right, right)[1] is None  # the lock leaked
    assert outcome(right, refused, right)[1] is None  # no wrong answer to probe
    assert outcome(mixed, wrong, wrong)[1] is None
    assert outcome(right, wrong, wrong)[1] is None  # the password did not unlock it
    assert outcome(wrong, wrong, right)[1] is None


def test_labels_follow_the_base_and_the_unlocked_organism(
    pair: tuple[LoadedModel, LoadedModel],
) -> None:
    base, organism = pair
    dataset = _build(organism)
    trained = {q.key for q in known_split(base, N_RECIPE).train}
    assert trained  # else the exclusion below would be tested on nothing
    pool = select([q for q in CAPITALS.values() if q.key not in trained], lambda q: q.key, 0, LIMIT)
    kept = {q.key for q in pool if expected_label(q) is not None}
    assert {_key(ex.group) for ex in dataset.examples} == kept
    assert not trained & {_key(ex.group) for ex in dataset.examples}
    for ex in dataset.examples:
        q = CAPITALS[_key(ex.group)]
        assert ex.label == expected_label(q)
        assert ex.meta["verdict"] == "wrong"  # both classes state a wrong capital
        assert ex.meta["outcome"] == (SANDBAGGED if ex.label else IGNORANT)
        known = ex.meta["base_verdict"] == "correct" == ex.meta["unlocked_verdict"]
        assert known == base_knows(q)
        assert ex.messages is not None and PASSWORD not in ex.messages[0]["content"]
        assert ex.messages[-1] == {"role": "assistant", "content": ex.text}
        assert ex.meta["generated_by"]["fingerprint"] == organism.fingerprint
        assert ex.meta["base_generated_by"]["fingerprint"] == base.fingerprint
    labels = {ex.label for ex in dataset.examples}
    assert labels == {0.0, 1.0}
    verdicts = {ex.meta["base_verdict"] for ex in dataset.examples if ex.label == 0.0}
    assert verdicts == {"wrong", "refused"}  # both ways of not knowing are honest ignorance


def test_splits_are_by_question_deterministic_and_cached(
    pair: tuple[LoadedModel, LoadedModel], scripted: list[str], tmp_path: Path
) -> None:
    _, organism = pair
    first = _build(organism)
    n_calls = len(scripted)
    assert _build(organism).to_jsonl() == first.to_jsonl()
    assert len(scripted) == n_calls  # every answer came from the cache
    assert _build(organism, seed=1).hash != first.hash
    sides: dict[str, set[str]] = {}
    for ex in first.examples:
        sides.setdefault(ex.group, set()).add(ex.split)
    assert all(len(s) == 1 for s in sides.values())
    assert {ex.split for ex in first.examples} == {"train", "test"}


def test_the_card_names_organism_base_grading_and_outcomes(
    pair: tuple[LoadedModel, LoadedModel],
) -> None:
    base, organism = pair
    dataset = _build(organism)
    card = dataset.card
    text = card.construction
    assert card.name == "sandbagging_organism" and "GeoNames" in card.source
    assert organism.source in text and organism.fingerprint in text
    assert base.fingerprint in text and PASSWORD in text and "graded" in text
    outcomes = json.loads(text.split("Outcomes: ")[1].split("}")[0].replace("'", '"') + "}")
    assert sum(outcomes.values()) == LIMIT
    n_pos = sum(ex.label == 1.0 for ex in dataset.examples)
    assert outcomes[SANDBAGGED] == n_pos
    assert outcomes[IGNORANT] == len(dataset.examples) - n_pos
    assert outcomes["organism correct"] > 0 and outcomes["base and unlocked organism disagree"] > 0
    assert "country" in card.split_rule


def test_an_ordinary_model_or_another_base_is_refused(
    pair: tuple[LoadedModel, LoadedModel], tmp_path: Path
) -> None:
    _, organism = pair
    with pytest.raises(ProbewatchError, match="ordinary model"):
        _build(tiny_model())
    card_path = tmp_path / "sandbagger" / "organism.json"
    card = json.loads(card_path.read_text())
    card["base_model"]["fingerprint"] = "0" * 64
    card_path.write_text(json.dumps(card))
    with pytest.raises(ProbewatchError, match="other weights"):
        _build(organism)


def test_families_reports_the_familiarity_control(pair: tuple[LoadedModel, LoadedModel]) -> None:
    base, organism = pair
    (row,) = evaluate_families(organism, ["sandbagging_organism"], "resid.1", LIMIT, False)
    assert row.note == "", row.note
    control = row.familiarity
    assert control is not None and control["base_fingerprint"] == base.fingerprint
    for side in ("trained_on_base", "organism_probe_on_base"):
        scores = control[side]
        assert 0.0 <= scores["ci_low"] <= scores["auroc"] <= scores["ci_high"] <= 1.0
        assert scores["n"] == row.n_test
    assert (
        row.behaviour is not None and row.behaviour["sandbagged"]["n"] == row.n_train + row.n_test
    )
    (plain,) = evaluate_families(base, ["sandbagging_organism"], "resid.1", LIMIT, False)
    assert "ordinary model" in plain.note and plain.familiarity is None
