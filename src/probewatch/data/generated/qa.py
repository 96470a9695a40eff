"""Asking the fact questions and grading the answers: shared by knowledge_qa, the instructed
deception set and sandbagging."""

from collections.abc import Sequence
from typing import Any

from probewatch.data.base import Example
from probewatch.data.generated.common import split_for
from probewatch.data.generated.facts import (
    CAPITALIZED_CANDIDATES,
    OPEN_ANSWER,
    Question,
    vocabulary,
)
from probewatch.data.generated.generate import Generation, GenerationSettings, generate
from probewatch.data.generated.grading import Grade, grade
from probewatch.models.loading import LoadedModel

ANSWER_STYLE = " Answer in one short sentence."
# Short answers are all the grader needs; 32 tokens fit "The capital of X is Y." with room.
QA_SETTINGS = GenerationSettings(max_new_tokens=32, batch_size=16)

Message = dict[str, str]
Answered = tuple[tuple[Message, ...], Generation, Grade]


def conversation(question: Question, system: str | None = None) -> tuple[Message, ...]:
    user = {"role": "user", "content": question.question + ANSWER_STYLE}
    return ({"role": "system", "content": system}, user) if system else (user,)


def grade_answer(question: Question, response: str) -> Grade:
    return grade(
        response,
        gold=question.gold,
        candidates=vocabulary().for_kind(question.kind),
        subject=question.subject,
        open_answer=OPEN_ANSWER[question.kind],
        capitalized=CAPITALIZED_CANDIDATES[question.kind],
        # "X is a country in Africa" answers no capital question.
        not_answers=vocabulary().for_kind("country") | vocabulary().for_kind("continent"),
    )


def ask(
    loaded: LoadedModel,
    questions: Sequence[Question],
    system: str | None = None,
    settings: GenerationSettings = QA_SETTINGS,
) -> list[Answered]:
    """(conversation, generation, grade) for each question, in order."""
    convs = [conversation(q, system) for q in questions]
    generations = generate(loaded, convs, settings)
    return [
        (conv, gen, grade_answer(q, gen.response))
        for q, conv, gen in zip(questions, convs, generations, strict=True)
    ]


def with_response(conv: Sequence[Message], response: str) -> tuple[Message, ...]:
    """The conversation ending with the model's answer, so positions="mask" covers it."""
    return (*conv, {"role": "assistant", "content": response})


def graded_example(
    question: Question, answer: Answered, seed: int, label: float, meta: dict[str, Any]
) -> Example:
    """One graded answer as an example, split by the question's group, with the meta every
    question family keeps (what was asked and stated, the verdict, the entity's span) beside
    the family's own `meta`."""
    conv, gen, grade = answer
    return Example(
        text=gen.response,
        label=label,
        split=split_for(question.group, seed),
        group=question.group,
        messages=with_response(conv, gen.response),
        meta={
            "kind": question.kind,
            "question": question.question,
            "gold": question.answer,
            "stated": grade.stated,
            "verdict": grade.verdict,
            "answer_span": list(grade.span) if grade.span else None,
            "finished": gen.finished,
            **meta,
            **question.meta,
        },
    )
