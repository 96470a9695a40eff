"""Datasets labelled by what the model itself generates (deception, hallucination,
sandbagging, progress through a response; the sandbagger organism's locked answers).

Each builder takes the loaded model, a seed and an optional limit on the number of
underlying items; generations are cached on disk per model fingerprint (see generate.py).
"""

from collections.abc import Callable

from probewatch.data.base import Dataset
from probewatch.data.generated.instructed import build_deception_told_to_lie
from probewatch.data.generated.knowledge import build_knowledge_qa
from probewatch.data.generated.progress import build_thinking_progress
from probewatch.data.generated.roleplay import build_deception_roleplay
from probewatch.data.generated.sandbagging import build_sandbagging
from probewatch.data.generated.sandbagging_organism import build_sandbagging_organism
from probewatch.models.loading import LoadedModel

GeneratedBuilder = Callable[[LoadedModel, int, int | None], Dataset]

GENERATED_BUILDERS: dict[str, GeneratedBuilder] = {
    "deception_roleplay": build_deception_roleplay,
    "deception_told_to_lie": build_deception_told_to_lie,
    "knowledge_qa": build_knowledge_qa,
    "sandbagging": build_sandbagging,
    "sandbagging_organism": build_sandbagging_organism,
    "thinking_progress": build_thinking_progress,
}

__all__ = [
    "GENERATED_BUILDERS",
    "GeneratedBuilder",
    "build_deception_roleplay",
    "build_deception_told_to_lie",
    "build_knowledge_qa",
    "build_sandbagging",
    "build_sandbagging_organism",
    "build_thinking_progress",
]
