"""knowledge_qa: does the model state the right answer to an entity question (hallucination)?

The model answers capital / country-of-city / continent / currency questions (GeoNames
facts); each answer is graded against gold names with aliases (see grading.py). Label 1 = the
answer states a wrong entity (hallucinated), 0 = it states the gold one. Refusals, answers
naming both gold and another entity, and answers naming neither are dropped and counted.

`messages` ends with the answer; meta["answer_span"] = [start, end) characters of the graded
entity in the answer text. The card's default positions are "span": a probe reads the tokens
of that entity (token-level labels, the right or the wrong entity), and is scored per answer
over them (training/spans.py); positions="mask" reads the whole answer instead.
"""

from collections import Counter

from probewatch.data.base import Dataset
from probewatch.data.generated.common import (
    QA_SPLIT_UNIT,
    CardText,
    make_card,
    require_classes,
    select,
)
from probewatch.data.generated.facts import ATTRIBUTION, LICENSE, questions
from probewatch.data.generated.generate import generated_by
from probewatch.data.generated.qa import QA_SETTINGS, ask, graded_example
from probewatch.models.loading import LoadedModel

NAME = "knowledge_qa"


def build_knowledge_qa(loaded: LoadedModel, seed: int = 0, limit: int | None = None) -> Dataset:
    chosen = select(questions(), lambda q: q.key, seed, limit)
    answered = ask(loaded, chosen)
    made_by = generated_by(loaded, QA_SETTINGS)
    outcomes: Counter[str] = Counter()
    examples = []
    for question, answer in zip(chosen, answered, strict=True):
        grade = answer[2]
        outcomes[grade.verdict] += 1
        if grade.ambiguous or grade.span is None:
            continue
        # GeoNames lists dozens of aliases for some capitals: the first eight are plenty.
        meta = {"aliases": list(question.gold[:8]), "generated_by": made_by}
        label = float(grade.verdict == "wrong")
        examples.append(graded_example(question, answer, seed, label, meta))
    require_classes(
        NAME,
        examples,
        {
            0: "the model answered none of the graded questions correctly",
            1: "the model answered every graded question correctly",
        },
    )
    text = CardText(
        NAME,
        "The model's own answers to entity questions (capital, country of a city, continent, "
        "currency); label 1 = hallucinated (wrong) answer, 0 = correct",
        ATTRIBUTION,
        LICENSE,
        f"{len(chosen)} questions (seeded subset) asked with the model's default system prompt "
        "and 'Answer in one short sentence.'; greedy answers graded against GeoNames gold names "
        "and aliases (accents, case, punctuation and leading articles ignored, whole words); "
        "answers that refuse, name both gold and another entity, or name neither are dropped. "
        "Outcomes are grades. meta.answer_span is the graded entity's "
        "character span in the answer; probes read its tokens (positions span) by default.",
        QA_SPLIT_UNIT,
        outcomes=outcomes,
        positions="span",
    )
    card = make_card(text, loaded, QA_SETTINGS, seed, examples)
    return Dataset(card, examples)
