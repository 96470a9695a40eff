"""docs/API.md cannot drift from the server: every example validates against the response
model it names, and the page names every model the routes answer with."""

import json
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from probewatch.server import schemas

DOC = Path(__file__).resolve().parents[2] / "docs" / "API.md"
EXAMPLE = re.compile(r"<!-- model: (\w+) -->\s*```json\n(.*?)```", re.S)


def examples() -> list[tuple[str, str]]:
    return EXAMPLE.findall(DOC.read_text())


@pytest.mark.parametrize(("model", "text"), examples())
def test_every_example_validates_against_its_model(model: str, text: str) -> None:
    cls = getattr(schemas, model)
    assert issubclass(cls, BaseModel)
    cls.model_validate(json.loads(text))  # raises, naming the field, if the page drifted


def test_the_page_shows_every_answer_and_the_three_kinds_of_chunk() -> None:
    named = [model for model, _ in examples()]
    for model in ("ChatChunk", "ChatCompletion", "ProbesListing", "EventsPage", "ErrorBody"):
        assert model in named
    chunks = [json.loads(text)["probewatch"] for model, text in examples() if model == "ChatChunk"]
    parsed = [
        schemas.ChatChunk.model_validate({**_chunk_shell(), "probewatch": c}).probewatch
        for c in chunks
    ]
    assert [type(p).__name__ for p in parsed] == ["PromptPayload", "TokenPayload", "FinalPayload"]


def test_a_drifted_example_fails() -> None:
    """The check can fail: a field the models do not know is refused."""
    with pytest.raises(ValueError, match="extra"):
        schemas.Alert.model_validate(
            {"probe": "harm", "token_index": 3, "value": 0.9, "threshold": 0.5, "colour": "red"}
        )


def _chunk_shell() -> dict[str, object]:
    return {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": None}],
    }
