"""Peers, run from `.venv-peers` (`make bench-peers`): the same 3-site capture with
TransformerLens and nnsight, steering-vector training with repeng and steering-vectors, and
per-head DLA against TransformerLens's (benchmarks/dla_peer.py), each side by side with ours in
this process, values checked against ours. A DLA disagreement fails the run (after the results
are written).

    .venv-peers/bin/python -m benchmarks.peers [--rounds 5]

How each peer is loaded, offline:
- TransformerLens 4.x removed HookedTransformer; its `TransformerBridge.boot_transformers`
  wraps an already loaded HF model (`hf_model=`), so SmolLM2 needs no name lookup. It forces
  eager attention on the model it wraps, so it gets its own copy (ours keeps SDPA).
- nnsight `LanguageModel` wraps our loaded HF model directly.
- repeng 0.4.0 still annotates with `np.float_`, removed in NumPy 2; we alias it before import
  (pyarrow, which probewatch needs, requires NumPy 2).
"""

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from benchmarks.common import interleaved, machine, sites_for, speed_ratio, write_results
from benchmarks.dla_peer import bench_dla_peer, check
from benchmarks.harvest import hidden_state_index
from benchmarks.workloads import contrast_dataset, contrast_pairs, token_batch
from probewatch.capture import ActivationCapture
from probewatch.models import load_model
from probewatch.models.loading import LoadedModel
from probewatch.sites import expand_sites
from probewatch.steer.directions import extract_directions
from probewatch.tokens import Batch


def _layer(site: str, n_layers: int) -> int:
    return hidden_state_index(site, n_layers) - 1


def ours_capture(loaded: LoadedModel, batch: Batch) -> dict[str, torch.Tensor]:
    """Our capture as [B, T, d] per site (positions='all', whole forward like the peers)."""
    sites = list(sites_for(loaded.n_layers))
    with ActivationCapture(loaded.model, sites, "all", stop_early=False) as capture:
        captured = capture.run(batch)
    shape = (*batch.input_ids.shape, loaded.d_model)
    return {site: acts.reshape(shape) for site, acts in captured.acts.items()}


def transformer_lens_capture(loaded: LoadedModel) -> Callable[[Batch], dict[str, torch.Tensor]]:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    copy = AutoModelForCausalLM.from_pretrained(loaded.source, dtype=torch.float32).eval()
    bridge = TransformerBridge.boot_transformers(
        loaded.source, hf_model=copy, tokenizer=loaded.tokenizer, device="cpu"
    )
    sites = sites_for(loaded.n_layers)
    names = {f"blocks.{_layer(s, loaded.n_layers)}.hook_resid_post": s for s in sites}

    def run(batch: Batch) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            _, cache = bridge.run_with_cache(batch.input_ids, names_filter=lambda n: n in names)
        return {site: cache[name] for name, site in names.items()}

    return run


def nnsight_capture(loaded: LoadedModel) -> Callable[[Batch], dict[str, torch.Tensor]]:
    from nnsight import LanguageModel

    lm = LanguageModel(loaded.model, tokenizer=loaded.tokenizer)
    layers = {s: _layer(s, loaded.n_layers) for s in sites_for(loaded.n_layers)}

    def run(batch: Batch) -> dict[str, torch.Tensor]:
        saved = {}
        with torch.no_grad(), lm.trace(batch.input_ids):
            for site, layer in layers.items():
                output = lm.model.layers[layer].output
                saved[site] = (output[0] if isinstance(output, tuple) else output).save()
        return {site: torch.as_tensor(value) for site, value in saved.items()}

    return run


def bench_capture_peers(loaded: LoadedModel, batch: Batch, rounds: int) -> dict[str, Any]:
    peers: dict[str, Callable[[Batch], dict[str, torch.Tensor]]] = {}
    errors: dict[str, str] = {}
    for name, make in (
        ("transformer_lens", transformer_lens_capture),
        ("nnsight", nnsight_capture),
    ):
        try:
            peers[name] = make(loaded)
        except Exception as exc:  # a peer that fails to load is a result, not a crash
            errors[name] = f"{type(exc).__name__}: {exc}"[:500]
    reference = ours_capture(loaded, batch)
    max_diff = {}
    for name, run in list(peers.items()):
        try:
            got = run(batch)
            max_diff[name] = max(float((got[s] - reference[s]).abs().max()) for s in reference)
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"[:500]
            del peers[name]

    @torch.no_grad()
    def bare() -> object:
        return loaded.model(input_ids=batch.input_ids, use_cache=False)

    candidates: dict[str, Callable[[], object]] = {
        "bare": bare,
        "ours": lambda: ours_capture(loaded, batch),
    }
    for name, run in peers.items():
        candidates[name] = partial(run, batch)
    times = interleaved(candidates, rounds)
    return {
        "batch": list(batch.input_ids.shape),
        "seconds": times,
        "ratio_vs_bare": {n: speed_ratio(times, n, "bare") for n in candidates if n != "bare"},
        "ratio_vs_ours": {n: speed_ratio(times, n, "ours") for n in peers},
        "max_abs_diff_vs_ours": max_diff,
        "errors": errors,
    }


def _cosines(ours: dict[int, torch.Tensor], theirs: dict[int, torch.Tensor]) -> dict[str, float]:
    values = [
        float(torch.nn.functional.cosine_similarity(ours[k].double(), theirs[k].double(), dim=0))
        for k in theirs
        if k in ours
    ]
    return {"min": min(values), "median": float(np.median(values)), "layers": len(values)}


def bench_steering(loaded: LoadedModel, n_pairs: int, rounds: int) -> dict[str, Any]:
    np.float_ = np.float64  # type: ignore[attr-defined]  # repeng 0.4.0 on NumPy 2
    from repeng import ControlVector, DatasetEntry
    from steering_vectors import train_steering_vector

    pairs = contrast_pairs(n_pairs)
    dataset = contrast_dataset(pairs)
    entries = [DatasetEntry(positive=p, negative=n) for p, n in pairs]
    n_layers = loaded.n_layers
    sites = [s.name for s in expand_sites("resid.*", n_layers)][1:]  # repeng skips layer 0
    results: dict[str, Any] = {}

    def ours(method: str) -> dict[int, torch.Tensor]:
        # A fresh cache each time: the harvest is part of the work, never a cache hit.
        with tempfile.TemporaryDirectory() as cache:
            previous = _set_cache(cache)
            try:
                vector = extract_directions(loaded, dataset, sites, method=method)
            finally:
                _set_cache(previous)
        return {_layer(s, n_layers): v for s, v in vector.vectors.items()}

    def repeng() -> dict[int, torch.Tensor]:
        vector = ControlVector.train(loaded.model, loaded.tokenizer, entries, method="pca_diff")
        return {k: torch.from_numpy(v) for k, v in vector.directions.items()}

    def steering_vectors(batch_size: int) -> dict[int, torch.Tensor]:
        vector = train_steering_vector(
            loaded.model,
            loaded.tokenizer,
            pairs,
            layers=list(range(1, n_layers)),
            read_token_index=-1,
            batch_size=batch_size,
        )
        return dict(vector.layer_activations)

    outputs: dict[str, dict[int, torch.Tensor]] = {}

    def keep(name: str, fn: Callable[[], dict[int, torch.Tensor]]) -> Callable[[], None]:
        def run() -> None:
            outputs[name] = fn()

        return run

    candidates = {
        "ours_mean_diff": keep("ours_mean_diff", lambda: ours("mean_diff")),
        "ours_pca_diff": keep("ours_pca_diff", lambda: ours("pca_diff")),
        "repeng_pca_diff": keep("repeng_pca_diff", repeng),
        "steering_vectors_b16": keep("steering_vectors_b16", lambda: steering_vectors(16)),
        "steering_vectors_b1": keep("steering_vectors_b1", lambda: steering_vectors(1)),
    }
    times = interleaved(candidates, rounds, warmup=0)
    results["pairs"] = n_pairs
    results["layers"] = len(sites)
    results["seconds"] = times
    results["ratio_vs_ours_mean_diff"] = {
        n: speed_ratio(times, n, "ours_mean_diff") for n in candidates if n != "ours_mean_diff"
    }
    # Same method, same read position (last token of each text), same layer outputs:
    results["cosine"] = {
        "steering_vectors_vs_ours_mean_diff": _cosines(
            outputs["ours_mean_diff"], outputs["steering_vectors_b16"]
        ),
        # repeng pairs (positive_i, negative_i) before PCA; our pca_diff pairs at random, so
        # these agree only as far as the first component of the differences is stable.
        "repeng_vs_ours_pca_diff": _cosines(outputs["ours_pca_diff"], outputs["repeng_pca_diff"]),
        "repeng_vs_ours_mean_diff": _cosines(outputs["ours_mean_diff"], outputs["repeng_pca_diff"]),
    }
    return results


def _set_cache(path: str | None) -> str | None:
    import os

    previous = os.environ.get("PROBEWATCH_CACHE")
    if path is None:
        os.environ.pop("PROBEWATCH_CACHE", None)
    else:
        os.environ["PROBEWATCH_CACHE"] = path
    return previous


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--steering-rounds", type=int, default=3)
    args = parser.parse_args()
    started = time.time()
    loaded = load_model("default")
    loaded.fingerprint  # noqa: B018  # computed once here, not inside a timed round
    out: dict[str, Any] = {"machine": machine()}
    out["dla"] = bench_dla_peer(loaded)
    out["capture"] = bench_capture_peers(
        loaded, token_batch(loaded, args.batch, args.length), args.rounds
    )
    print("capture:", out["capture"]["ratio_vs_ours"], out["capture"]["max_abs_diff_vs_ours"])
    out["steering"] = bench_steering(loaded, args.pairs, args.steering_rounds)
    print("steering:", out["steering"]["ratio_vs_ours_mean_diff"], out["steering"]["cosine"])
    out["elapsed_s"] = time.time() - started
    write_results("peers", out)
    for row in out["dla"].values():
        check(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
