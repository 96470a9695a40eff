"""`compare(a, b, spec)`: the whole comparison of two sides on the same prompts, as one report.

from probewatch.compare import Side, compare
report = compare(Side(load_model("default"), "A"), Side(load_model(path), "B"), spec)
report.save("compare/")     # compare.json + compare.html
"""

import time
from typing import Any

import numpy as np

from probewatch.compare.adl import activation_difference_lens, probe_direction
from probewatch.compare.behaviour import Outcomes, behaviour_rows, outcomes, phrase_matcher
from probewatch.compare.divergence import kl_summary, top_spans
from probewatch.compare.drift import drift_onset
from probewatch.compare.forward import Pair, Side, site_list
from probewatch.compare.generation import prompt_ids, replies
from probewatch.compare.passes import PassResults, run_passes
from probewatch.compare.patching import patch_shares
from probewatch.compare.prompts import PromptSets, build_prompts, read_prompts
from probewatch.compare.report import CompareReport, verdict
from probewatch.compare.spec import CompareSpec
from probewatch.compare.stats import mean_interval
from probewatch.compare.transfer import probe_transfer
from probewatch.data.generated.qa import grade_answer
from probewatch.errors import ProbewatchError
from probewatch.probes.artifact import ProbeArtifact, load_probe
from probewatch.steer.directions import load_vector
from probewatch.steer.refusal import is_refusal


def _require_same_tokenizer(pair: Pair) -> None:
    va, vb = pair.a.loaded.tokenizer.get_vocab(), pair.b.loaded.tokenizer.get_vocab()
    if va != vb:
        raise ProbewatchError(
            f"{pair.a.loaded.name} and {pair.b.loaded.name} use different vocabularies; "
            "per-token comparison needs the same tokenizer",
            hint="compare a model with its fine-tunes, checkpoints or interventions",
        )


def _load_probes(pair: Pair, spec: CompareSpec) -> dict[str, ProbeArtifact]:
    probes = {}
    for index, path in enumerate(spec.probe_list()):
        probe = load_probe(path)
        if int(probe.card["model"]["d_model"]) != pair.a.loaded.d_model:
            raise ProbewatchError(f"probe {path} reads another model's activations")
        dataset = (probe.card.get("dataset") or {}).get("name", "probe")
        probes[f"{index}:{dataset}@{probe.site}"] = probe
    return probes


def _behaviour_outcomes(
    prompts: PromptSets, texts: tuple[list[str], list[str]], pair: Pair, spec: CompareSpec
) -> list[Outcomes]:
    ta, tb = texts
    rows = []
    for name, desc in (
        ("harmful", "refusal on harmful requests (keyword matcher)"),
        ("harmless", "refusal on harmless requests (over-refusal)"),
    ):
        idx = prompts.indices(name)
        if idx:
            rows.append(
                outcomes(
                    f"refusal: {name}", desc, is_refusal, [ta[i] for i in idx], [tb[i] for i in idx]
                )
            )
    idx = sorted(prompts.questions)
    if idx:
        qs = [prompts.questions[i] for i in idx]
        a = np.array(
            [grade_answer(q, ta[i]).verdict == "correct" for q, i in zip(qs, idx, strict=True)],
            float,
        )
        b = np.array(
            [grade_answer(q, tb[i]).verdict == "correct" for q, i in zip(qs, idx, strict=True)],
            float,
        )
        rows.append(
            Outcomes(
                "task accuracy: capitals",
                "capital questions answered correctly (GeoNames gold)",
                a,
                b,
            )
        )
    specs = list(spec.behaviour_list())
    for side in (pair.a, pair.b):
        specs += list(side.planted_behaviours())
    for text in dict.fromkeys(specs):
        name, judge = phrase_matcher(text)
        rows.append(
            outcomes(
                f"behaviour: {name}", f"reply contains: {text.partition('=')[2]}", judge, ta, tb
            )
        )
    return rows


def _probe_rows(
    passes: PassResults, probes: dict[str, ProbeArtifact], spec: CompareSpec
) -> tuple[list[Outcomes], list[dict[str, Any]]]:
    flags, shifts = [], []
    for name, probe in probes.items():
        sa, sb = np.array(passes.probe_a[name]), np.array(passes.probe_b[name])
        threshold = float((probe.card.get("threshold") or {}).get("value", 0.0))
        flags.append(
            Outcomes(
                f"probe flag: {name}",
                f"score > {threshold:.3g} at the generation prompt",
                (sa > threshold).astype(float),
                (sb > threshold).astype(float),
            )
        )
        shifts.append(
            {
                "probe": name,
                "site": probe.site,
                "mean_a": float(sa.mean()),
                "mean_b": float(sb.mean()),
                "shift": mean_interval(sb - sa, spec.n_boot, spec.seed).to_dict(),
            }
        )
    return flags, shifts


def _patch_choice(passes: PassResults, firsts: tuple[list[int], list[int]], k: int) -> list[int]:
    """Prompts whose first reply tokens differ, most divergent at the generation prompt first."""
    at_prompt = [float(r.ab[-1] + r.ba[-1]) for r in passes.prompt_kl]
    order = sorted(
        range(len(at_prompt)), key=lambda i: (firsts[0][i] == firsts[1][i], -at_prompt[i])
    )
    return order[:k]


def _directions(probes: dict[str, ProbeArtifact], pair: Pair, spec: CompareSpec) -> dict[str, Any]:
    out = {
        f"probe {n}": (p.site, probe_direction(p, pair.a.loaded.d_model)) for n, p in probes.items()
    }
    for path in spec.vector_list():
        vector = load_vector(path)
        for site in vector.sites:
            out[f"vector {path}@{site}"] = (site, vector[site].double())
    return out


def compare(a: Side, b: Side, spec: CompareSpec) -> CompareReport:
    """Compare side B with side A on the same prompts; see the package docstring."""
    pair = Pair(a, b)
    _require_same_tokenizer(pair)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    extra = read_prompts(spec.prompts) if spec.prompts else None
    prompts = build_prompts(spec.n, spec.seed, spec.set_list(), extra, spec.adl_texts)
    probes = _load_probes(pair, spec)
    sites = site_list(a, spec.sites)
    ids = prompt_ids(a, prompts.chats)
    timings["prepare"] = time.perf_counter() - clock
    clock = time.perf_counter()
    gen = (replies(a, ids, spec), replies(b, ids, spec))
    timings["generation"] = time.perf_counter() - clock
    clock = time.perf_counter()
    passes = run_passes(pair, gen, sites, probes, spec)
    timings["passes"] = time.perf_counter() - clock
    clock = time.perf_counter()
    texts = ([r.text for r in gen[0]], [r.text for r in gen[1]])
    flag_rows, shifts = _probe_rows(passes, probes, spec)
    rows = behaviour_rows(
        _behaviour_outcomes(prompts, texts, pair, spec) + flag_rows, spec.n_boot, spec.seed
    )
    drift = [passes.drift[s.name].summary(spec.n_boot, spec.seed) for s in sites]
    divergence = {
        "prompt": kl_summary(passes.prompt_kl, "prompt", spec.n_boot, spec.seed),
        "a_replies": kl_summary(
            passes.reply_kl_a, "A's replies through both", spec.n_boot, spec.seed
        ),
        "b_replies": kl_summary(
            passes.reply_kl_b, "B's replies through both", spec.n_boot, spec.seed
        ),
        "top_spans": top_spans(
            passes.prompt_kl + passes.reply_kl_a + passes.reply_kl_b,
            a.loaded.tokenizer,
            spec.top_spans,
        ),
    }
    timings["statistics"] = time.perf_counter() - clock
    clock = time.perf_counter()
    adl = activation_difference_lens(
        pair, prompts.texts, sites, _directions(probes, pair, spec), spec
    )
    timings["adl"] = time.perf_counter() - clock
    clock = time.perf_counter()
    transfer = (
        [probe_transfer(pair, name, probe, spec) for name, probe in probes.items()]
        if spec.transfer_n
        else []
    )
    timings["transfer"] = time.perf_counter() - clock
    clock = time.perf_counter()
    firsts = (
        [r.reply_ids[0] if r.reply_ids else 0 for r in gen[0]],
        [r.reply_ids[0] if r.reply_ids else 0 for r in gen[1]],
    )
    chosen = _patch_choice(passes, firsts, spec.patch_prompts)
    patching = patch_shares(
        pair,
        [list(gen[0][i].prompt_ids) for i in chosen],
        ([firsts[0][i] for i in chosen], [firsts[1][i] for i in chosen]),
        site_list(a, spec.patch_sites),
        spec,
    )
    timings["patching"] = time.perf_counter() - clock
    parts: dict[str, Any] = {
        "behaviour": rows,
        "divergence": divergence,
        "drift": {
            "sites": drift,
            "onset": drift_onset(drift, spec.drift_tolerance),
            "tolerance": spec.drift_tolerance,
        },
        "adl": adl,
        "probe_shift": shifts,
        "probe_transfer": transfer,
        "patching": patching,
    }
    return CompareReport(
        a=a.describe(),
        b=b.describe(),
        prompts={
            "n": len(prompts.chats),
            "sets": {s: len(prompts.indices(s)) for s in dict.fromkeys(prompts.set_of)},
            "sources": prompts.sources,
        },
        examples=[
            {
                "set": prompts.set_of[i],
                "prompt": prompts.chats[i][-1]["content"],
                "a": texts[0][i],
                "b": texts[1][i],
            }
            for i in range(min(6, len(texts[0])))
        ],
        parts=parts,
        verdict=verdict(parts, spec),
        settings=spec_dict(spec),
        seconds={k: round(v, 2) for k, v in timings.items()},
    )


def spec_dict(spec: CompareSpec) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        k: (str(v) if v is not None and not isinstance(v, int | float | str | bool) else v)
        for k, v in asdict(spec).items()
    }
