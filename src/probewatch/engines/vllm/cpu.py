"""Where vLLM's CPU workers run: one core group per rank when vLLM's own binding cannot
place them; and the serving process kept off their cores. Imports without vLLM installed."""

import contextlib
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


def bound_cores(binding: str | None) -> set[int]:
    """The cores a VLLM_CPU_OMP_THREADS_BIND value names ("0,1|2-3"); none for auto/nobind."""
    cores: set[int] = set()
    for part in (binding or "").replace("|", ",").split(","):
        first, _, last = part.strip().partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            cores.update(range(int(first), int(last or first) + 1))
    return cores


def thread_cores() -> set[int]:
    """The cores any thread of this process may run on (a worker calls it once vLLM has
    bound its OpenMP threads)."""
    cores: set[int] = set()
    for tid in _thread_ids():
        with contextlib.suppress(OSError):  # a thread that just ended
            cores |= os.sched_getaffinity(tid)
    return cores


def _thread_ids() -> list[int]:
    return [int(tid) for tid in os.listdir("/proc/self/task")]


class OffWorkerCores:
    """Keeps this (serving) process's threads off the cores vLLM's CPU workers are bound to.

    Unbound, its threads (HTTP, score joining, vLLM's own output handling) were scheduled on
    the workers' cores and slowed every forward pass: monitored vLLM ran at 0.92 of plain
    vLLM at 8 clients, and its serving process was the difference. vLLM reserves a core
    beside its workers for this process ("reserved_cpus") but does not move it there.
    Threads started later inherit the binding, child processes too; `restore` undoes it."""

    def __init__(self) -> None:
        self._before: set[int] | None = None

    def apply(self, worker_cores: set[int]) -> set[int] | None:
        """Bind every thread to the allowed cores minus `worker_cores`; the cores it now runs
        on, or None (left as it was) when that would leave none or change nothing."""
        allowed = set(os.sched_getaffinity(0))
        rest = allowed - worker_cores
        if torch.cuda.is_available() or not rest or rest == allowed:
            return None
        if self._before is None:  # a second apply must not make its binding the original
            self._before = allowed
        _bind_threads(rest)
        log.info(
            "serving threads moved to cores %s, off vLLM's workers' %s",
            sorted(rest),
            sorted(worker_cores),
        )
        return rest

    def restore(self) -> None:
        if self._before is not None:
            _bind_threads(self._before)
            self._before = None


def _bind_threads(cores: set[int]) -> None:
    for tid in _thread_ids():
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(tid, cores)
