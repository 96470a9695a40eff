"""The comparison's passes: each side runs once over the prompts followed by its own reply, and
once over the prompts followed by the other side's reply (teacher forcing). From the first
pass come the prompt-token KL, every requested site's drift and every probe's score at the
generation prompt; from both, the KL on each side's replies read through the other."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from probewatch.compare.divergence import TokenKL, sequence_kl
from probewatch.compare.drift import SiteDrift
from probewatch.compare.forward import Pair, Side, run
from probewatch.compare.generation import Reply
from probewatch.compare.spec import CompareSpec
from probewatch.probes.artifact import ProbeArtifact
from probewatch.sites import Site
from probewatch.tokens import Batch


@dataclass
class PassResults:
    prompt_kl: list[TokenKL] = field(default_factory=list)
    reply_kl_a: list[TokenKL] = field(default_factory=list)  # A's replies, read by both
    reply_kl_b: list[TokenKL] = field(default_factory=list)
    drift: dict[str, SiteDrift] = field(default_factory=dict)
    probe_a: dict[str, list[float]] = field(default_factory=dict)  # score at generation prompt
    probe_b: dict[str, list[float]] = field(default_factory=dict)
    seconds_forward: float = 0.0


def padded(sequences: Sequence[Sequence[int]], pad: int) -> Batch:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return Batch(ids, mask, None)


def _pad_id(side: Side) -> int:
    tok = side.loaded.tokenizer
    return int(tok.pad_token_id if tok.pad_token_id is not None else 0)


def run_passes(
    pair: Pair,
    replies: tuple[Sequence[Reply], Sequence[Reply]],
    sites: Sequence[Site],
    probes: dict[str, ProbeArtifact],
    spec: CompareSpec,
) -> PassResults:
    import time

    a, b, batch_size, seed = pair.a, pair.b, spec.batch_size, spec.seed
    replies_a, replies_b = replies
    out = PassResults(drift={s.name: SiteDrift(s.name) for s in sites})
    probe_sites = {p.site for p in probes.values()}
    read = _with_probe_sites(sites, probe_sites, a)
    pad = _pad_id(a)
    started = time.perf_counter()
    for start in range(0, len(replies_a), batch_size):
        chunk = range(start, min(start + batch_size, len(replies_a)))
        own = [list(replies_a[i].prompt_ids) + list(replies_a[i].reply_ids) for i in chunk]
        batch = padded(own, pad)
        pa, pb = run(a, batch, read), run(b, batch, read)
        lengths = [len(s) for s in own]
        for site in sites:
            out.drift[site.name].add(pa.acts[site.name], pb.acts[site.name], lengths, seed)
        for row, i in enumerate(chunk):
            p_len = len(replies_a[i].prompt_ids)
            ids = own[row]
            out.prompt_kl.append(
                sequence_kl(pa.logprobs[row, :p_len], pb.logprobs[row, :p_len], ids, i, "prompt")
            )
            out.reply_kl_a.append(
                sequence_kl(
                    pa.logprobs[row, p_len : lengths[row]],
                    pb.logprobs[row, p_len : lengths[row]],
                    ids[p_len:],
                    i,
                    "A's reply",
                )
            )
            for name, probe in probes.items():
                for side_scores, acts in ((out.probe_a, pa.acts), (out.probe_b, pb.acts)):
                    score = probe.score(acts[probe.site][row, p_len - 1 : p_len])
                    side_scores.setdefault(name, []).append(float(score[0]))
        others = [list(replies_b[i].prompt_ids) + list(replies_b[i].reply_ids) for i in chunk]
        batch = padded(others, pad)
        qa, qb = run(a, batch), run(b, batch)
        for row, i in enumerate(chunk):
            p_len, end = len(replies_b[i].prompt_ids), len(others[row])
            out.reply_kl_b.append(
                sequence_kl(
                    qa.logprobs[row, p_len:end],
                    qb.logprobs[row, p_len:end],
                    others[row][p_len:],
                    i,
                    "B's reply",
                )
            )
    out.seconds_forward = time.perf_counter() - started
    return out


def _with_probe_sites(sites: Sequence[Site], probe_sites: set[str], side: Side) -> list[Site]:
    from probewatch.sites import parse_site

    names = {s.name for s in sites}
    extra = [parse_site(n, side.loaded.n_layers) for n in sorted(probe_sites - names)]
    return list(sites) + extra


def scores_array(values: dict[str, list[float]], name: str) -> np.ndarray:
    return np.asarray(values.get(name, []), dtype=np.float64)
