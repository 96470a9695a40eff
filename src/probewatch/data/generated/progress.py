"""thinking_progress (regression): how far through its own response is the model?

The model answers "In N sentences, explain how ..." or "List N steps ..." prompts (topics
written for this project), with N spread evenly over 1..10 across topics, so answers range
from one short sentence to ten items: a probe cannot read "how far" from the token position
alone (the position-only baseline is reported beside it). Each response that ends on its own
(EOS / end of turn within max_new_tokens) becomes one example.
Responses cut off by max_new_tokens are dropped and counted: their true end is unknown, so
"fraction completed" would be wrong for them.

Alignment with tokens.py: `messages` ends with the response, so `encode_chats` marks the
response's tokens (the chat-template tokens overlapping the response's characters) as the
positions of interest. meta["progress"] has exactly one value per marked token, in order:
the k-th marked token (k = 1..n) gets k / n, so the last response token is 1.0. The marked
tokens are those of the re-tokenized rendered chat, which can differ from the generated token
ids (BPE can merge differently); `n` is computed with encode_chats itself, so the targets line
up with what capture(positions="mask") returns. `label` = the mean target, (n + 1) / (2n),
a placeholder that keeps the summary readable; per-token targets are the real signal.
"""

from collections import Counter
from collections.abc import Sequence
from typing import Any

from probewatch.data.base import Dataset, Example
from probewatch.data.generated.common import CardText, make_card, select, split_for
from probewatch.data.generated.generate import GenerationSettings, generate, generated_by
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.tokens import Message, encode_chats

NAME = "thinking_progress"
SETTINGS = GenerationSettings(max_new_tokens=320, batch_size=20)
# Requested lengths 1..10: a ten-sentence answer runs to ~250 tokens, a one-sentence one ~20.
# Half the topics ask for prose, half for a numbered list (a different surface per length).
LENGTHS = tuple(range(1, 11))
PROMPTS = {
    "sentences": "In exactly {n} {unit}, explain how {topic}.",
    "list": "List {n} short {unit}, as a numbered list, explaining how {topic}.",
}
UNITS = {"sentences": ("sentence", "sentences"), "list": ("step", "steps")}


def request_for(topic: str, rank: int) -> tuple[str, int, str]:
    """(style, requested length, prompt) for the topic at position `rank` of the seeded order:
    lengths cycle through 1..10 and styles alternate every ten, so every length gets both."""
    n = LENGTHS[rank % len(LENGTHS)]
    style = ("sentences", "list")[(rank // len(LENGTHS)) % 2]
    unit = UNITS[style][0 if n == 1 else 1]
    return style, n, PROMPTS[style].format(n=n, unit=unit, topic=topic)


TOPICS: tuple[str, ...] = (
    "a bill becomes a law",
    "bread rises",
    "to change a flat tyre",
    "vaccines train the immune system",
    "to solve a quadratic equation",
    "rainbows form",
    "to make a cup of tea",
    "a refrigerator keeps food cold",
    "plants make food from sunlight",
    "to plant a tree",
    "a letter gets from one city to another by post",
    "to boil an egg",
    "an airplane stays in the air",
    "to wash clothes by hand",
    "the heart pumps blood",
    "to set up a new email account",
    "clouds produce rain",
    "to write a good essay",
    "a battery stores energy",
    "to cook rice on a stove",
    "a volcano erupts",
    "to tie a shoelace",
    "a search engine finds web pages",
    "to make a paper airplane",
    "the moon causes tides",
    "to budget a monthly salary",
    "a seed grows into a plant",
    "to brush your teeth properly",
    "recycling turns old bottles into new ones",
    "to find the area of a triangle",
    "a bicycle's gears work",
    "to prepare for a job interview",
    "earthquakes happen",
    "to make a sandwich",
    "a camera takes a picture",
    "to learn a new language",
    "soap removes dirt",
    "to pack a suitcase for a trip",
    "the seasons change during the year",
    "to convert Celsius to Fahrenheit",
    "a thermostat controls temperature",
    "to start a small vegetable garden",
    "a microwave heats food",
    "to make pancakes",
    "the water cycle works",
    "to back up files on a computer",
    "a compass shows north",
    "to write a thank-you letter",
    "ice melts",
    "to add two fractions",
    "electricity reaches a house",
    "to care for a houseplant",
    "a bee makes honey",
    "to calculate a tip at a restaurant",
    "sound travels through the air",
    "to make a simple budget spreadsheet",
    "a caterpillar becomes a butterfly",
    "to clean a kitchen",
    "a lock and key work",
    "to train for a 5 km run",
    "a dishwasher cleans plates",
    "to make a fruit smoothie",
    "a lighthouse guides ships",
    "to change a light bulb safely",
    "a wind turbine makes electricity",
    "to fold a fitted sheet",
    "yeast ferments sugar",
    "to write a shopping list",
    "a river carves a valley",
    "to sew on a button",
    "a library organizes its books",
    "to iron a shirt",
    "the stomach digests food",
    "to make a cup of coffee with a French press",
    "a fridge magnet sticks to metal",
    "to measure the length of a room",
    "a candle burns",
    "to wrap a present",
    "lungs take in oxygen",
    "to make a paper boat",
    "a traffic light controls cars",
    "to organize a bookshelf",
    "a glacier moves",
    "to make a simple salad",
    "a thermometer measures temperature",
    "to repot a plant",
    "a spider builds a web",
    "to plan a birthday party",
    "a phone call reaches another phone",
    "to clean a bicycle chain",
    "stars shine",
    "to make homemade lemonade",
    "an elevator moves between floors",
    "to memorize a short poem",
    "a kettle boils water",
    "to set a table for dinner",
    "fossils form",
    "to write a short story",
    "a parachute slows a fall",
    "to multiply two large numbers by hand",
    "milk becomes cheese",
    "to make a bed neatly",
    "a submarine dives and surfaces",
    "to warm up before exercise",
    "a solar panel makes electricity",
    "to read a map",
    "bats find their way in the dark",
    "to bake a simple cake",
    "a credit card payment is processed",
    "to hang a picture on a wall",
    "leaves change colour in autumn",
    "to make a snowman",
    "a car engine turns fuel into motion",
    "to take care of a pet fish",
    "a sailboat moves against the wind",
    "to study for an exam",
    "the eye sees colours",
    "to make a grilled cheese sandwich",
    "a printer puts ink on paper",
    "to plan a weekly meal schedule",
)


def progress_targets(n_tokens: int) -> list[float]:
    return [round((k + 1) / n_tokens, 6) for k in range(n_tokens)]


def progress_example(
    loaded: LoadedModel,
    conversation: Sequence[Message],
    response: str,
    group: str,
    seed: int,
    meta: dict[str, Any] | None = None,
) -> Example:
    """One example: the conversation plus `response`, with the per-token targets k/n aligned
    to the response tokens that encode_chats marks."""
    messages = (*conversation, {"role": "assistant", "content": response})
    batch = encode_chats(loaded.tokenizer, [messages])
    assert batch.token_mask is not None  # encode_chats always marks the last message
    n = int(batch.token_mask.sum())
    targets = progress_targets(n)
    return Example(
        text=response,
        label=round(sum(targets) / n, 6),
        split=split_for(group, seed),
        group=group,
        messages=messages,
        meta={"progress": targets, "n_response_tokens": n, **(meta or {})},
    )


def build_thinking_progress(
    loaded: LoadedModel, seed: int = 0, limit: int | None = None
) -> Dataset:
    topics = select(list(TOPICS), lambda t: t, seed, limit)
    requests = [request_for(t, rank) for rank, t in enumerate(topics)]
    convs = [({"role": "user", "content": prompt},) for _, _, prompt in requests]
    generations = generate(loaded, convs, SETTINGS)
    made_by = generated_by(loaded, SETTINGS)
    outcomes: Counter[str] = Counter()
    examples = []
    for topic, (style, n, _), conv, gen in zip(topics, requests, convs, generations, strict=True):
        if not gen.finished or not gen.response:
            outcomes["truncated" if not gen.finished else "empty"] += 1
            continue
        outcomes["finished"] += 1
        meta = {
            "topic": topic,
            "style": style,
            "requested_length": n,
            "n_generated_tokens": gen.n_tokens,
            "generated_by": made_by,
        }
        examples.append(progress_example(loaded, conv, gen.response, topic, seed, meta))
    if not examples:
        raise ProbewatchError(
            f"dataset {NAME}: no response finished within {SETTINGS.max_new_tokens} new tokens "
            f"({dict(outcomes)})",
            hint="raise limit, or use a model that ends its answers",
        )
    text = CardText(
        NAME,
        "The model's own explanations of 1 to 10 sentences or steps; per-token target = "
        "fraction of the response completed (meta.progress, aligned to the response mask of "
        "encode_chats)",
        f"{len(TOPICS)} explanation topics written for probewatch",
        "Apache-2.0 (prompts, as the code); generated text: see the model's licence",
        f"{len(topics)} prompts (seeded subset) {PROMPTS}, requested length N cycling "
        "through 1..10 over the seeded topic order, style alternating every ten; greedy, "
        "max_new_tokens="
        f"{SETTINGS.max_new_tokens}; responses cut by the limit are dropped. The k-th of the n "
        "response tokens marked by tokens.encode_chats gets k/n; label = mean target.",
        "topic",
        outcomes=outcomes,
        task="regression",
    )
    card = make_card(text, loaded, SETTINGS, seed, examples)
    return Dataset(card, examples)
