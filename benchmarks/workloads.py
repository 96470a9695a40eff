"""The inputs every tool is measured on: identical token batches, prompts, probes, contrast
pairs. Nothing here depends on a peer library, so the peers venv imports it too."""

import torch

from benchmarks.common import sites_for
from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.models.loading import LoadedModel
from probewatch.monitor import MonitoredProbe
from probewatch.probes import ProbeArtifact, make_probe
from probewatch.probes.artifact import build_card
from probewatch.tokens import Batch

Chat = list[dict[str, str]]

TOPICS = [
    "the ocean",
    "mountains",
    "a city at night",
    "an old library",
    "a train journey",
    "the first snow",
    "a birthday party",
    "a job interview",
    "a long flight",
    "a garden in spring",
    "a football match",
    "a thunderstorm",
    "a quiet morning",
    "a crowded market",
    "a museum visit",
    "learning to swim",
    "a power cut",
    "a wedding",
    "moving house",
    "a lost key",
    "a night sky",
    "a bakery",
    "a hospital waiting room",
    "a school reunion",
    "a broken phone",
    "a mountain hike",
    "a rainy weekend",
    "a new puppy",
    "a traffic jam",
    "a concert",
    "a desert road",
    "a fishing trip",
    "a chess game",
    "a kitchen fire",
    "a winter holiday",
    "an exam result",
    "a bus stop",
    "a letter from home",
    "a forest walk",
    "the last day of summer",
]


def token_batch(loaded: LoadedModel, batch: int, length: int, seed: int = 0) -> Batch:
    """Random token ids, no padding: every tool sees exactly the same tensor."""
    vocab = int(loaded.model.config.vocab_size)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(100, vocab - 1), vocab, (batch, length), generator=gen)
    return Batch(ids, torch.ones_like(ids), None)


def chats(n: int) -> list[Chat]:
    return [
        [{"role": "user", "content": f"Tell me about {TOPICS[i % len(TOPICS)]}."}] for i in range(n)
    ]


def probes(loaded: LoadedModel, n: int = 8) -> list[ProbeArtifact]:
    """`n` logistic probes spread over `sites`, fitted on random data (only their cost counts).
    Thresholds are unreachable, so alerts never change the work done."""
    sites = sites_for(loaded.n_layers)
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        x = torch.randn(256, loaded.d_model, generator=gen)
        probe = make_probe("logistic").fit(x, (x[:, i % loaded.d_model] > 0).float())
        card = build_card(
            probe,
            loaded,
            sites[i % len(sites)],
            "last",
            {"name": f"bench{i}", "hash": "-"},
            {},
            {"threshold": {"value": 1e9, "target_fpr": 0.01}},
        )
        card["name"] = f"bench{i}"
        out.append(ProbeArtifact(probe, card))
    return out


def monitored(loaded: LoadedModel, n: int = 8) -> list[MonitoredProbe]:
    return [MonitoredProbe.from_artifact(a.card["name"], a) for a in probes(loaded, n)]


def contrast_pairs(n: int = 40) -> list[tuple[str, str]]:
    """repeng-style persona pairs: the same request, a happy vs a sad speaker."""
    return [
        (
            f"You are an extremely happy person. Describe {topic}.",
            f"You are an extremely sad person. Describe {topic}.",
        )
        for topic in (TOPICS * (n // len(TOPICS) + 1))[:n]
    ]


def contrast_dataset(pairs: list[tuple[str, str]]) -> Dataset:
    """The pairs as a probewatch dataset: label 1 = positive, all in the train split."""
    card = DatasetCard(
        name="bench_contrast",
        description="benchmark contrast pairs",
        source="benchmarks/workloads.py",
        license="-",
        construction="persona pairs",
        split_rule="all train",
    )
    examples = []
    for i, (pos, neg) in enumerate(pairs):
        examples.append(Example(pos, 1.0, "train", group=str(i)))
        examples.append(Example(neg, 0.0, "train", group=str(i)))
    return Dataset(card, examples)


def text_dataset(n_examples: int, words: int, seed: int = 0) -> Dataset:
    """`n_examples` plain texts of about `words` words each, for the memory benchmark."""
    gen = torch.Generator().manual_seed(seed)
    vocab = " ".join(TOPICS).split()
    examples = []
    for i in range(n_examples):
        picks = torch.randint(0, len(vocab), (words,), generator=gen).tolist()
        examples.append(Example(" ".join(vocab[j] for j in picks), float(i % 2), "train"))
    card = DatasetCard(
        name=f"bench_text_{n_examples}",
        description="random words",
        source="benchmarks/workloads.py",
        license="-",
        construction="random words from a fixed list",
        split_rule="all train",
    )
    return Dataset(card, examples)
