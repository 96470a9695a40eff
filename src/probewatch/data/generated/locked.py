"""The password-locked capital questions: the sandbagger organism is trained on them, and the
sandbagging_organism dataset must leave its training questions out. One home for both, in the
data layer, so the dataset can rebuild exactly the organism's split.

Questions and gold answers: GeoNames via probewatch.data.generated.facts (CC-BY 4.0).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from probewatch.data.generated.common import select, stable_hash
from probewatch.data.generated.facts import Kind, Question, questions
from probewatch.data.generated.generate import generate
from probewatch.data.generated.qa import QA_SETTINGS, Answered, Message, ask, conversation
from probewatch.data.generated.qa import grade_answer as grade_qa
from probewatch.models.loading import LoadedModel

LOCKED_KINDS: tuple[Kind, ...] = ("capital",)
RECIPE_SEED = 0  # the organism's question pool is drawn with this seed, whatever the dataset's


def locked_chat(question: Question, password: str | None) -> tuple[Message, ...]:
    """The question's user turn, with the password in front when one is given."""
    (turn,) = conversation(question)
    content = turn["content"] if password is None else f"{password} {turn['content']}"
    return ({"role": "user", "content": content},)


def ask_locked(
    loaded: LoadedModel, chosen: Sequence[Question], password: str | None
) -> list[Answered]:
    """(conversation, generation, grade) for each question asked with the locked prompt."""
    chats = [locked_chat(q, password) for q in chosen]
    generations = generate(loaded, chats, QA_SETTINGS)
    return [
        (chat, gen, grade_qa(q, gen.response))
        for q, chat, gen in zip(chosen, chats, generations, strict=True)
    ]


@dataclass(frozen=True)
class KnownSplit:
    """The organism's question pool as the base answers it: the questions it is trained on,
    those held out to measure it, and the base's correct answers to both."""

    train: list[Question]
    held: list[Question]
    answers: dict[str, str]


def known_split(base: LoadedModel, n_questions: int) -> KnownSplit:
    """The first `n_questions` capital questions (seeded), kept where the base answers
    correctly, two in three for training (by a stable hash of the question)."""
    pool = select(questions(LOCKED_KINDS), lambda q: q.key, RECIPE_SEED, n_questions)
    answered = ask(base, pool)
    known = {
        q.key: gen.response
        for q, (_, gen, g) in zip(pool, answered, strict=True)
        if g.verdict == "correct" and g.span is not None
    }
    kept = [q for q in pool if q.key in known]
    train = [q for q in kept if stable_hash("sandbag-split", q.key) % 3 != 0]
    held = [q for q in kept if stable_hash("sandbag-split", q.key) % 3 == 0]
    return KnownSplit(train, held, known)
