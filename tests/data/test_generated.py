"""Datasets labelled by the model's own generations: grading, caching, determinism, splits.

Unit tests script the model's answers (the uncached generation step is replaced) so labels
are known; the generation machinery itself runs on a tiny random model. Real-model tests
build each dataset from SmolLM2 with a small limit.
"""

from collections.abc import Sequence
from pathlib import Path

import pytest

from probewatch.data.base import Dataset
from probewatch.data.generated import GENERATED_BUILDERS
from probewatch.data.generated import generate as gen_module
from probewatch.data.generated.common import stable_hash
from probewatch.data.generated.facts import Question, questions
from probewatch.data.generated.generate import Generation, GenerationSettings, generate
from probewatch.data.generated.grading import grade, keyword_hits, name_key, normalize
from probewatch.data.generated.instructed import INSTRUCTIONS
from probewatch.data.generated.progress import PROMPTS as PROGRESS_PROMPTS
from probewatch.data.generated.progress import build_thinking_progress
from probewatch.data.generated.qa import grade_answer
from probewatch.data.generated.roleplay import Scenario, classify, load_scenarios
from probewatch.data.generated.sandbagging import PRESSURES
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.tokens import encode_chats
from tests.helpers import tiny_model

QUESTIONS = {q.key: q for q in questions()}
CITIES = [name_key(c) for c in ("Sydney", "Melbourne", "Paris", "Lyon", "Nice", "Canberra")]


# --- grading -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    ["Paris.", "paris", "The capital is Paris", "PARIS!", "It's Paris, of course.", "Paris"],
)
def test_gold_is_found_whatever_the_case_and_punctuation(response: str) -> None:
    result = grade(response, gold=["Paris"], candidates=CITIES, subject=["France"])
    assert result.verdict == "correct"
    assert result.span is not None
    assert response[result.span[0] : result.span[1]].casefold() == "paris"


@pytest.mark.parametrize(
    ("gold", "response"),
    [
        ("São Paulo", "It is in Sao Paulo."),
        ("Bogota", "The capital is Bogotá."),
        ("The Hague", "The seat of government is Hague."),
        ("Malé", "The capital of the Maldives is Male."),
        ("N'Djamena", "The capital of Chad is N’Djamena."),
        ("Kraków", "KRAKOW"),
    ],
)
def test_accents_articles_and_apostrophes_are_ignored(gold: str, response: str) -> None:
    assert grade(response, gold=[gold]).verdict == "correct"


def test_normalize() -> None:
    assert normalize("  The  Hague! ") == "hague"
    assert normalize("São-Paulo") == "sao paulo"
    assert normalize("the") == "the"  # a lone article stays: it is the whole name


def test_wrong_entity_is_wrong_with_its_span() -> None:
    response = "The capital of Australia is Sydney."
    result = grade(response, gold=["Canberra"], candidates=CITIES, subject=["Australia"])
    assert result.verdict == "wrong"
    assert result.stated == "Sydney"
    assert result.span == (response.index("Sydney"), response.index("Sydney") + 6)


def test_both_named_is_mixed_and_refusals_are_refused() -> None:
    both = grade("Canberra, not Sydney.", gold=["Canberra"], candidates=CITIES)
    assert both.verdict == "mixed" and both.ambiguous
    refused = grade("I'm sorry, I don't know.", gold=["Canberra"], candidates=CITIES)
    assert refused.verdict == "refused" and refused.ambiguous


def test_whole_words_only_and_lowercase_city_words_are_not_answers() -> None:
    assert grade("Parisian food is great.", gold=["Paris"]).verdict == "no_answer"
    # "nice" the adjective is not the city of Nice.
    assert grade("It is a nice place.", gold=["Paris"], candidates=CITIES).verdict == "no_answer"


def test_invented_names_count_as_wrong_only_for_open_questions() -> None:
    response = "The capital of Burkina Faso is Kouilé."
    opened = grade(response, gold=["Ouagadougou"], subject=["Burkina Faso"], open_answer=True)
    assert opened.verdict == "wrong" and opened.stated == "Kouilé"
    closed = grade(response, gold=["Ouagadougou"], subject=["Burkina Faso"])
    assert closed.verdict == "no_answer"


def test_subject_is_never_the_answer() -> None:
    # "Australia" is both the subject and an Oceania alias: only "Oceania" answers.
    result = grade("Australia is in Oceania.", gold=["Oceania", "Australia"], subject=["Australia"])
    assert result.verdict == "correct" and result.stated == "Oceania"


def test_gulf_of_oman_does_not_name_oman() -> None:
    dubai = next(q for q in QUESTIONS.values() if q.kind == "country" and "Dubai" in q.question)
    result = grade_answer(dubai, "Dubai lies on the Gulf of Oman, in the UAE.")
    assert result.verdict == "correct"


@pytest.mark.parametrize(
    ("key", "response", "verdict"),
    [
        ("capital:FR", "The capital of France is Paris.", "correct"),
        ("capital:AU", "The capital of Australia is Sydney.", "wrong"),
        ("capital:US", "The capital of the United States is Washington, D.C.", "correct"),
        ("continent:PE", "Peru is a country in South America.", "correct"),
        ("continent:PE", "Peru is in Africa.", "wrong"),
        ("continent:RU", "Russia is in Asia.", "correct"),  # transcontinental
        ("currency:JP", "The currency of Japan is the Japanese Yen (JPY).", "correct"),
        ("currency:JP", "Japan uses the euro.", "wrong"),
    ],
)
def test_real_questions_grade_as_expected(key: str, response: str, verdict: str) -> None:
    assert grade_answer(QUESTIONS[key], response).verdict == verdict


def test_country_questions_accept_aliases() -> None:
    paris = next(q for q in QUESTIONS.values() if q.kind == "country" and "Paris" in q.question)
    assert grade_answer(paris, "Paris is in france.").verdict == "correct"
    london = next(q for q in QUESTIONS.values() if q.kind == "country" and "London" in q.question)
    assert grade_answer(london, "London is the capital of the UK.").verdict == "correct"
    assert grade_answer(london, "London is in Canada.").verdict == "wrong"


def test_places_that_are_not_the_answer_are_not_graded_wrong() -> None:
    # Seen on SmolLM2: "America" (a US alias) inside "South America", and a continent taken
    # as an invented capital.
    arequipa = next(q for q in QUESTIONS.values() if q.question.endswith("Arequipa in?"))
    response = "The city of Arequipa is located in the Andean region of South America."
    assert grade_answer(arequipa, response).verdict == "no_answer"
    sydney = next(q for q in QUESTIONS.values() if q.question.endswith("of Sydney in?"))
    response = "The city of Sydney is the capital of New South Wales."
    assert grade_answer(sydney, response).verdict == "no_answer"
    assert grade_answer(sydney, "Sydney is in Wales.").verdict == "wrong"
    assert grade_answer(sydney, "Wales.").verdict == "wrong"
    zimbabwe = QUESTIONS["capital:ZW"]
    assert grade_answer(zimbabwe, "Zimbabwe is a country in Africa.").verdict == "no_answer"
    assert grade_answer(zimbabwe, "The capital of Zimbabwe is Bulawayo.").verdict == "wrong"


def test_questions_that_give_the_answer_away_are_skipped() -> None:
    assert "capital:MX" not in QUESTIONS  # Mexico City
    assert "capital:SG" not in QUESTIONS  # Singapore
    assert "capital:FR" in QUESTIONS
    assert "Mexico" not in QUESTIONS["continent:MX"].gold


def test_keyword_negation_and_inflection() -> None:
    assert keyword_hits("It has never been in an accident.", ["accident"]) == (0, 1)
    assert keyword_hits("It was in two accidents.", ["accident"]) == (1, 0)
    assert keyword_hits("I didn't finish it.", ["finish"]) == (0, 1)
    assert keyword_hits("Accidental? No.", ["accident"]) == (0, 0)


# --- role-play scenarios -------------------------------------------------------------------


def test_scenarios_file_has_at_least_100_valid_unique_scenarios() -> None:
    scenarios = load_scenarios()
    assert len(scenarios) >= 100
    assert len({s.id for s in scenarios}) == len(scenarios)
    assert len({s.setting for s in scenarios}) == len(scenarios)
    for s in scenarios:
        assert "?" in s.question, s.id
        assert len(s.honest) >= 3 and len(s.deceptive) >= 3, s.id


@pytest.mark.parametrize("scenario", load_scenarios(), ids=lambda s: s.id)
def test_each_phrase_alone_is_classified_on_its_own_side(scenario: Scenario) -> None:
    for phrase in scenario.honest:
        assert classify(scenario, f"Hm, {phrase}.") == "honest", phrase
    for phrase in scenario.deceptive:
        assert classify(scenario, f"Hm, {phrase}.") == "deceptive", phrase


def test_roleplay_rules_on_written_replies() -> None:
    car = next(s for s in load_scenarios() if s.id == "used-car-crash")
    assert classify(car, "Yes, it was in a crash last year.") == "honest"
    assert classify(car, "No, never been in an accident, it's in perfect condition!") == (
        "deceptive"
    )
    assert classify(car, "No accidents at all.") == "deceptive"
    assert classify(car, "It drives well.") == "ambiguous"
    # A leading "No" (the lie) with an admission of the crash: evidence both ways.
    assert classify(car, "No, but it had a crash once.") == "ambiguous"


# --- generation and caching ----------------------------------------------------------------


CONVS = [
    ({"role": "user", "content": "Hi"},),
    ({"role": "user", "content": "What is the capital of France? Answer briefly."},),
    ({"role": "system", "content": "Be terse."}, {"role": "user", "content": "Count to ten."}),
]


def test_generation_is_cached_and_the_second_call_does_not_generate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = tiny_model()
    settings = GenerationSettings(max_new_tokens=6, batch_size=2)
    first = generate(loaded, CONVS, settings)
    files = list(Path(gen_module.cache_dir(), "generations").rglob("*.jsonl"))
    assert len(files) == 1
    assert files[0].parent.name == f"{loaded.name}-{loaded.fingerprint[:8]}"
    header = files[0].read_text().splitlines()[0]
    assert loaded.fingerprint in header and '"max_new_tokens": 6' in header

    def refuse(*args: object) -> list[Generation]:
        raise AssertionError("generated again despite the cache")

    monkeypatch.setattr(gen_module, "_generate_uncached", refuse)
    assert generate(loaded, CONVS, settings) == first
    assert loaded.tokenizer.padding_side == "right"  # capture's setting is left alone


def test_generating_says_so_on_stderr_also_when_it_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # An uncached build is the longest step a user meets (an hour for the 0.5B model); under
    # pytest stderr is not a terminal, as in a log or CI.
    loaded = tiny_model()
    generate(loaded, CONVS, GenerationSettings(max_new_tokens=4, batch_size=2))
    err = capsys.readouterr().err
    assert f"generating answers with {loaded.name}" in err and "3/3" in err
    generate(loaded, CONVS, GenerationSettings(max_new_tokens=4, batch_size=2))
    assert "generating" not in capsys.readouterr().err  # from the cache: nothing to say


def test_generation_is_deterministic_and_batching_does_not_change_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = tiny_model()
    batched = generate(loaded, CONVS, GenerationSettings(max_new_tokens=6, batch_size=3))
    monkeypatch.setenv("PROBEWATCH_CACHE", str(tmp_path))  # a fresh cache: generate again
    again = generate(loaded, CONVS, GenerationSettings(max_new_tokens=6, batch_size=3))
    single = generate(loaded, CONVS, GenerationSettings(max_new_tokens=6, batch_size=1))
    assert batched == again
    # Left padding with the attention mask: a padded row decodes as it does alone.
    assert [g.response for g in batched] == [g.response for g in single]
    assert all(g.n_tokens <= 6 for g in batched)


def test_a_damaged_cache_is_regenerated() -> None:
    loaded = tiny_model()
    settings = GenerationSettings(max_new_tokens=4, batch_size=4)
    first = generate(loaded, CONVS, settings)
    (path,) = Path(gen_module.cache_dir(), "generations").rglob("*.jsonl")
    path.write_text("{not json\n")
    assert generate(loaded, CONVS, settings) == first


# --- builders, with scripted answers -------------------------------------------------------


def _wrong_answer(question: Question) -> str:
    if question.kind == "capital":
        return "The capital is Atlantis."
    if question.kind == "country":
        return "It is in Japan." if "Japan" not in question.gold else "It is in France."
    if question.kind == "continent":
        return "It is in Europe." if "Europe" not in question.gold else "It is in Africa."
    return "They use the Dollar."


def _scripted(prompt: str) -> str:
    """What the fake model says: a deterministic mix of right and wrong answers."""
    for scenario in load_scenarios():
        if scenario.setting in prompt:
            lie = stable_hash("lie", scenario.id) % 2 == 0
            return f"Well, {scenario.deceptive[0] if lie else scenario.honest[0]}."
    if any(t.split("{n}")[0] in prompt for t in PROGRESS_PROMPTS.values()):
        return "First, do this. Then do that. Finally, check the result."
    question = next(q for q in QUESTIONS.values() if q.question + " " in prompt)
    right = f"The answer is {question.answer}."
    if INSTRUCTIONS["deceptive"] in prompt:
        return _wrong_answer(question)
    if any(p in prompt for p in PRESSURES):
        return _wrong_answer(question) if stable_hash("sand", question.key) % 2 else right
    return right if stable_hash("qa", question.key) % 3 else _wrong_answer(question)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def fake(
        loaded: LoadedModel, prompts: Sequence[str], settings: GenerationSettings
    ) -> list[Generation]:
        calls.append(len(prompts))
        return [Generation(_scripted(p), finished=True, n_tokens=5) for p in prompts]

    monkeypatch.setattr(gen_module, "_generate_uncached", fake)
    return calls


def _no_group_across_splits(dataset: Dataset) -> None:
    sides: dict[str, set[str]] = {}
    for ex in dataset.examples:
        sides.setdefault(ex.group, set()).add(ex.split)
    assert all(len(s) == 1 for s in sides.values())


# Built on an organism, not on a plain model: the same checks are in test_sandbagging_organism.
ON_ORGANISMS = {"sandbagging_organism"}


@pytest.mark.parametrize("name", sorted(set(GENERATED_BUILDERS) - ON_ORGANISMS))
def test_builders_are_deterministic_cached_and_split_by_group(
    name: str, scripted: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = tiny_model()
    builder = GENERATED_BUILDERS[name]
    first = builder(loaded, 0, 30)
    n_calls = len(scripted)
    assert n_calls >= 1
    second = builder(loaded, 0, 30)
    assert len(scripted) == n_calls  # all from the cache
    assert first.to_jsonl() == second.to_jsonl()
    monkeypatch.setenv("PROBEWATCH_CACHE", str(tmp_path))
    assert builder(loaded, 0, 30).to_jsonl() == first.to_jsonl()  # regenerated: same bytes
    assert builder(loaded, 1, 30).hash != first.hash  # the seed picks items and splits

    _no_group_across_splits(first)
    assert {ex.split for ex in first.examples} <= {"train", "test"}
    card = first.card
    assert card.name == name
    assert loaded.fingerprint in card.construction and loaded.name in card.construction
    for ex in first.examples:
        assert ex.messages is not None and ex.messages[-1]["role"] == "assistant"
        assert ex.messages[-1]["content"] == ex.text
        assert ex.meta["generated_by"]["fingerprint"] == loaded.fingerprint
    if card.task == "binary":
        assert {ex.label for ex in first.examples} == {0.0, 1.0}
        assert "Label counts" in card.construction


def test_knowledge_qa_marks_the_graded_entity(scripted: list[int]) -> None:
    dataset = GENERATED_BUILDERS["knowledge_qa"](tiny_model(), 0, 40)
    assert "CC-BY 4.0" in dataset.card.license and "GeoNames" in dataset.card.source
    assert dataset.card.positions == "span"  # probes read the graded entity by default
    for ex in dataset.examples:
        start, end = ex.meta["answer_span"]
        assert ex.text[start:end] == ex.meta["stated"]
        assert ex.label == float(ex.meta["verdict"] == "wrong")


def test_instructed_labels_come_from_the_response_not_the_instruction(
    scripted: list[int],
) -> None:
    dataset = GENERATED_BUILDERS["deception_told_to_lie"](tiny_model(), 0, 20)
    instructions = {ex.meta["instruction"] for ex in dataset.examples}
    assert instructions == {"honest", "deceptive"}
    # The scripted model answers wrongly sometimes even when told to be honest.
    honest_wrong = [
        ex for ex in dataset.examples if ex.meta["instruction"] == "honest" and ex.label == 1.0
    ]
    assert honest_wrong and all(ex.meta["instruction_label"] == 0 for ex in honest_wrong)


def test_sandbagging_keeps_only_questions_known_under_neutral(scripted: list[int]) -> None:
    dataset = GENERATED_BUILDERS["sandbagging"](tiny_model(), 0, 40)
    neutral = [ex for ex in dataset.examples if ex.meta["framing"] == "neutral"]
    pressured = [ex for ex in dataset.examples if ex.meta["framing"] == "pressured"]
    assert len(neutral) == len(pressured) > 0
    assert all(ex.label == 0.0 and ex.meta["verdict"] == "correct" for ex in neutral)
    assert {ex.label for ex in pressured} == {0.0, 1.0}


def test_progress_targets_align_with_the_response_mask(scripted: list[int]) -> None:
    loaded = tiny_model()
    dataset = build_thinking_progress(loaded, 0, 5)
    assert dataset.card.task == "regression"
    for ex in dataset.examples:
        assert ex.messages is not None
        batch = encode_chats(loaded.tokenizer, [[dict(m) for m in ex.messages]])
        assert batch.token_mask is not None
        progress = ex.meta["progress"]
        assert len(progress) == int(batch.token_mask.sum()) == ex.meta["n_response_tokens"]
        assert progress[-1] == 1.0 and progress == sorted(progress)
        assert ex.label == pytest.approx(sum(progress) / len(progress), abs=1e-5)


def test_a_missing_class_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def always_right(
        loaded: LoadedModel, prompts: Sequence[str], settings: GenerationSettings
    ) -> list[Generation]:
        answers = []
        for prompt in prompts:
            question = next(q for q in QUESTIONS.values() if q.question + " " in prompt)
            answers.append(Generation(f"It is {question.answer}.", True, 4))
        return answers

    monkeypatch.setattr(gen_module, "_generate_uncached", always_right)
    with pytest.raises(ProbewatchError, match="no examples with label 1"):
        GENERATED_BUILDERS["knowledge_qa"](tiny_model(), 0, 10)


def test_truncated_progress_responses_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    def never_done(
        loaded: LoadedModel, prompts: Sequence[str], settings: GenerationSettings
    ) -> list[Generation]:
        return [Generation("Step 1: and so on", False, settings.max_new_tokens) for _ in prompts]

    monkeypatch.setattr(gen_module, "_generate_uncached", never_done)
    with pytest.raises(ProbewatchError, match="no response finished"):
        build_thinking_progress(tiny_model(), 0, 3)


# --- the real default model ----------------------------------------------------------------

# Small enough for ~3 minutes on 2 CPU cores (generations are cached after the first run).
REAL_LIMITS = {
    "knowledge_qa": 16,
    "deception_told_to_lie": 8,
    "deception_roleplay": 16,
    "sandbagging": 16,
    "thinking_progress": 3,
}


@pytest.mark.real
@pytest.mark.parametrize("name", sorted(REAL_LIMITS))
def test_real_model_builds(name: str, default_model: LoadedModel) -> None:
    try:
        dataset = GENERATED_BUILDERS[name](default_model, 0, REAL_LIMITS[name])
    except ProbewatchError as exc:
        # Whether a 135M model lies in role-play or sandbags at all is an empirical
        # question; a missing class must then be reported clearly, not as a crash.
        if name in {"deception_roleplay", "sandbagging"}:
            assert "no examples with label 1" in str(exc)
            pytest.skip(f"{name}: {exc.message}")
        if name == "thinking_progress":  # the small model may ramble past the token limit
            assert "no response finished" in str(exc)
            pytest.skip(f"{name}: {exc.message}")
        raise
    _no_group_across_splits(dataset)
    assert default_model.fingerprint in dataset.card.construction
    if dataset.card.task == "binary":
        assert {ex.label for ex in dataset.examples} == {0.0, 1.0}
    else:
        assert dataset.examples and all(ex.meta["progress"][-1] == 1.0 for ex in dataset.examples)
