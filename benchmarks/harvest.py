"""Capture of 3 sites vs a bare forward pass on identical batches, and parity with
`output_hidden_states`.

Rows: `bare` (HF forward, logits included), `hidden_states` (HF `output_hidden_states=True`),
`capture_full` (our hooks, the whole forward still run: the pure cost of capturing) and
`capture` (our default: the forward stops after the deepest site, resid.24 of 30)."""

from typing import Any

import torch

from benchmarks.common import interleaved, sites_for, speed_ratio
from probewatch.capture import ActivationCapture
from probewatch.models.loading import LoadedModel
from probewatch.sites import expand_sites
from probewatch.tokens import Batch


def hidden_state_index(site: str, n_layers: int) -> int:
    """resid.i is HF's hidden_states[i + 1] (hidden_states[0] is the embedding output)."""
    (parsed,) = expand_sites(site, n_layers)
    if parsed.kind != "resid" or parsed.layer is None:
        raise ValueError(f"only resid sites map to hidden_states, not {site}")
    return parsed.layer + 1


def capture_parity(loaded: LoadedModel, batch: Batch, sites: tuple[str, ...]) -> float:
    """Max |ours - HF output_hidden_states| over the sites (positions='all')."""
    with torch.no_grad():
        hidden = loaded.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=True,
        ).hidden_states
    with ActivationCapture(loaded.model, list(sites), positions="all") as capture:
        captured = capture.run(batch)
    rows, cols = captured.example_index, captured.token_index
    worst = 0.0
    for site in sites:
        reference = hidden[hidden_state_index(site, loaded.n_layers)][rows, cols]
        worst = max(worst, float((captured.acts[site] - reference).abs().max()))
    return worst


def bench_capture(loaded: LoadedModel, batch: Batch, rounds: int) -> dict[str, Any]:
    sites = sites_for(loaded.n_layers)
    model = loaded.model
    kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    full = ActivationCapture(model, list(sites), positions="all", stop_early=False)
    early = ActivationCapture(model, list(sites), positions="all")

    @torch.no_grad()
    def bare() -> object:
        return model(**kwargs, use_cache=False)

    @torch.no_grad()
    def hidden_states() -> object:
        return model(**kwargs, use_cache=False, output_hidden_states=True)

    def run(capture: ActivationCapture) -> object:
        with capture:
            return capture.run(batch)

    times = interleaved(
        {
            "bare": bare,
            "hidden_states": hidden_states,
            "capture_full": lambda: run(full),
            "capture": lambda: run(early),
        },
        rounds,
    )
    tokens = int(batch.attention_mask.sum())
    return {
        "batch": list(batch.input_ids.shape),
        "sites": list(sites),
        "rounds": rounds,
        "seconds": times,
        "bare_tok_s": tokens / min(times["bare"]),
        "ratio_capture_full_vs_bare": speed_ratio(times, "capture_full", "bare"),
        "ratio_capture_vs_bare": speed_ratio(times, "capture", "bare"),
        "ratio_hidden_states_vs_bare": speed_ratio(times, "hidden_states", "bare"),
        "max_abs_diff_vs_hidden_states": capture_parity(loaded, batch, sites),
    }
