"""What an organism is: a recipe (data + LoRA settings) and the measurements on its card."""

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from probewatch.compare.stats import Interval, wilson
from probewatch.data.generated.generate import GenerationSettings, generate
from probewatch.models.loading import LoadedModel
from probewatch.organisms.lora import LoraSettings, TrainingExample
from probewatch.tokens import Message

Chat = tuple[Message, ...]
RECIPE_FORMAT = 1  # bump when a recipe's data construction changes


def user(content: str) -> Chat:
    return ({"role": "user", "content": content},)


def reply(chat: Chat, content: str) -> Chat:
    return (*chat, {"role": "assistant", "content": content})


@dataclass(frozen=True)
class BehaviourRate:
    """A planted behaviour's rate on the base model and on the organism, on the same prompts."""

    name: str
    condition: str
    base: Interval
    organism: Interval
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "condition": self.condition,
            "description": self.description,
            "base": self.base.to_dict(),
            "organism": self.organism.to_dict(),
        }


def rate_row(
    name: str, condition: str, description: str, base: Sequence[bool], organism: Sequence[bool]
) -> BehaviourRate:
    return BehaviourRate(
        name,
        condition,
        wilson(sum(base), len(base)),
        wilson(sum(organism), len(organism)),
        description,
    )


def replies(loaded: LoadedModel, chats: Sequence[Chat], max_new_tokens: int) -> list[str]:
    """Greedy replies (cached per model fingerprint, so the base's are generated once)."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=16)
    return [g.response for g in generate(loaded, chats, settings)]


class Organism(ABC):
    """A model organism: how to make its training data from the base model, and how to
    measure its planted behaviour (with and without the trigger) on held-out prompts."""

    name: ClassVar[str]
    description: ClassVar[str]
    trigger: ClassVar[str | None]
    behaviours: ClassVar[tuple[str, ...]] = ()  # rows a comparison adds: NAME=PHRASE|...
    sources: ClassVar[str]
    settings: LoraSettings = LoraSettings()

    def recipe(self) -> dict[str, Any]:
        """Everything that decides the weights, given the base: hashed into the cache key."""
        return {
            "organism": self.name,
            "format": RECIPE_FORMAT,
            "trigger": self.trigger,
            "lora": asdict(self.settings),
            **self.recipe_details(),
        }

    def recipe_hash(self) -> str:
        text = json.dumps(self.recipe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @abstractmethod
    def recipe_details(self) -> dict[str, Any]: ...

    @abstractmethod
    def training_examples(self, base: LoadedModel) -> list[TrainingExample]: ...

    @abstractmethod
    def measure(self, base: LoadedModel, organism: LoadedModel) -> list[BehaviourRate]: ...
