"""Where vLLM's CPU workers run: one core group per rank when vLLM's own binding cannot
place them. Imports without vLLM installed."""

import glob
import logging
import os
from collections.abc import Sequence

import torch

from probewatch.config import EngineChoice
from probewatch.errors import ProbewatchError

log = logging.getLogger(__name__)
BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
_ours: str | None = None  # the binding bind_cpu_workers last set, so it can take it back


def cpu_binding(choice: EngineChoice, cpus: Sequence[int], numa_nodes: int) -> str | None:
    """vLLM's thread binding for its CPU workers (one per tensor rank per engine), or None
    where vLLM's "auto" binding works: auto puts local rank N on NUMA node N, so it fails
    with fewer nodes than ranks (any 2-rank run on a one-node machine). The allowed cores
    are split into one contiguous group per rank, in vLLM's [DP, TP] rank order ("0|1")."""
    ranks = choice.vllm_tensor_parallel * choice.vllm_data_parallel
    if ranks <= numa_nodes:
        return None
    if len(cpus) < ranks:
        raise ProbewatchError(
            f"{choice.vllm_tensor_parallel} tensor x {choice.vllm_data_parallel} data-parallel "
            f"vLLM ranks need a CPU core each, and {len(cpus)} are available",
            hint="lower --vllm-tensor-parallel / --vllm-data-parallel, or bind the workers "
            f"yourself with {BIND_ENV} (vLLM's CPU install docs)",
        )
    groups = [cpus[len(cpus) * r // ranks : len(cpus) * (r + 1) // ranks] for r in range(ranks)]
    return "|".join(",".join(str(c) for c in group) for group in groups)


def bind_cpu_workers(choice: EngineChoice) -> None:
    """Set (or take back) the binding in the environment vLLM's processes inherit; a
    binding the user set is left alone, and GPU workers do not read it."""
    global _ours
    if os.environ.get(BIND_ENV, _ours) != _ours or torch.cuda.is_available():
        return
    nodes = max(1, len(glob.glob("/sys/devices/system/node/node[0-9]*")))
    _ours = cpu_binding(choice, sorted(os.sched_getaffinity(0)), nodes)
    if _ours is None:
        os.environ.pop(BIND_ENV, None)
    else:
        os.environ[BIND_ENV] = _ours
        log.info("vLLM's CPU workers are bound to cores %s (%s)", _ours, BIND_ENV)
