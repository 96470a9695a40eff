"""`probewatch serve --engine vllm`: the server's `Engine` (server/engine.py) on vLLM's
`AsyncLLM`, every token scored by the in-graph probes.

Joining. A request's prompt occupies positions 0..P-1 and its k-th generated token sits
at P + k; the score of a token comes from the step that consumes it, keyed by
(request id, absolute position) whatever the batch, chunking or recompute did. The prompt
scores are the row at P - 1: `PromptScored` (with the prompt-scope alerts) is delivered as
soon as it arrives, before the first token. To score every token including the last, vLLM
is asked for one more token than the client wants and runs with `ignore_eos`: we stop at a
stop token ourselves once its own score has arrived, then abort the request.

Aggregates, alerts and verdicts are the HF Monitor's own code (`Monitor.read_prompt`,
`Monitor.advance`), so both engines keep one contract. AsyncLLM lives on this engine's own
event loop thread; `generate` bridges each request's deliveries to the caller's loop.
"""

import asyncio
import dataclasses
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import Future
from typing import Any

import torch

from probewatch.config import EngineChoice, split_list
from probewatch.engines.vllm import check_vllm_version
from probewatch.engines.vllm.cpu import BIND_ENV, OffWorkerCores, bind_cpu_workers, bound_cores
from probewatch.engines.vllm.layout import EXTRA_ARGS_KEY, Layout, ProbePlan, our_architecture
from probewatch.engines.vllm.transport import ADDRESS_ENV, ScoreCollector, pack
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.monitor import Monitor, MonitoredProbe
from probewatch.server.engine import (
    Delivery,
    Engine,
    EngineStats,
    Failed,
    Finished,
    GenerationRequest,
    PromptScored,
    TokenGenerated,
    relay,
)
from probewatch.server.loop_post import post
from probewatch.sites import parse_site

log = logging.getLogger(__name__)
WORKER_EXTENSION = "probewatch.engines.vllm.worker.ProbeWorkerExtension"
SCORE_TIMEOUT_S = 120.0  # longest wait for a token's scores: the request fails, never unscored


def engine_args(
    loaded: LoadedModel, layout: Layout, choice: EngineChoice, prefix_caching: bool = True
) -> dict[str, Any]:
    """Keyword arguments for vLLM's (Async)EngineArgs / LLM that load our model class.
    Prefix caching is safe for serving (the last prompt position is always recomputed, and
    that is where prompt scores come from) but not for harvesting every prompt position."""
    architectures = list(getattr(loaded.model.config, "architectures", None) or [])
    return {
        "model": loaded.source,
        "tokenizer": loaded.source,
        "dtype": str(loaded.model.dtype).removeprefix("torch."),
        "max_model_len": choice.vllm_max_model_len,
        "max_num_seqs": choice.vllm_max_num_seqs,
        "enforce_eager": choice.vllm_eager,
        "tensor_parallel_size": choice.vllm_tensor_parallel,
        "data_parallel_size": choice.vllm_data_parallel,
        "enable_prefix_caching": prefix_caching,
        "hf_overrides": {"architectures": [our_architecture(architectures)]},
        "additional_config": {"probewatch": layout.to_dict()},
        "worker_extension_cls": WORKER_EXTENSION,
        "seed": 0,
    }


def steer_layers(vectors: dict[str, dict[str, torch.Tensor]], n_layers: int) -> list[int]:
    """The layers the served vectors add to (resid.* sites only)."""
    layers = set()
    for name, by_site in vectors.items():
        for site in by_site:
            parsed = parse_site(site, n_layers)
            if parsed.kind != "resid" or parsed.layer is None:
                raise ProbewatchError(
                    f"steering vector {name!r} acts on {site}; the vLLM engine steers resid.* only",
                    hint="extract the vector at resid.* sites, or serve with --engine hf",
                )
            layers.add(parsed.layer)
    return sorted(layers)


def setup_environment(collector: ScoreCollector, choice: EngineChoice) -> None:
    """What vLLM's processes read from the environment they inherit."""
    os.environ[ADDRESS_ENV] = collector.address
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(choice.vllm_kv_cache_gib)
    bind_cpu_workers(choice)


class _Wake:
    """An asyncio.Event that another thread can set."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.event = loop, asyncio.Event()

    def set(self) -> None:
        post(self.loop, self.event.set)

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            return
        self.event.clear()


class VllmEngine(Engine):
    """The server's generation backend on vLLM."""

    def __init__(
        self,
        loaded: LoadedModel,
        probes: Sequence[MonitoredProbe],
        choice: EngineChoice,
        vectors: dict[str, dict[str, torch.Tensor]],
    ) -> None:
        check_vllm_version()
        self.loaded, self.choice, self.vectors = loaded, choice, vectors
        self.stats = EngineStats()
        self.layout = Layout(
            n_layers=loaded.n_layers,
            d_model=loaded.d_model,
            sites=[p.artifact.site for p in probes] + split_list(choice.vllm_sites),
            k_max=choice.vllm_k_max,
            steer_layers=steer_layers(vectors, loaded.n_layers),
            capture=True,
        )
        self.plan = ProbePlan.build(self.layout, probes)
        self._monitor = Monitor(loaded, list(probes))
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="probewatch-vllm")
        self._engine: Any = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # The plan each running request reads (its columns stay pinned), and the lock that
        # orders a probe reload against requests starting: both used on the engine loop only.
        self._running: dict[str, ProbePlan] = {}
        self._plan_lock = asyncio.Lock()
        self.collector: ScoreCollector | None = None
        self.score_waits: list[float] = []  # token -> its scores, seconds (benchmarks)
        self._off_cores = OffWorkerCores()

    # -- Engine ------------------------------------------------------------------------------

    def start(self) -> None:
        """Build the engine (blocks until vLLM is up: compiling takes minutes on a CPU)."""
        self._thread.start()
        try:
            self._call(self._start()).result()
        except BaseException:
            # The loop thread is not a daemon: left running, it kept the process from ever
            # exiting after vLLM failed to start (seen: a test run hung after the failure).
            self.stop()
            raise

    def stop(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        if self.collector is not None:
            self.collector.close()
            self.collector = None
        self._off_cores.restore()

    def set_probes(self, probes: Sequence[MonitoredProbe]) -> None:
        """New weights go into the engine's buffers in place (no recompilation); a probe the
        engine cannot score is refused with ProbewatchError and nothing changes. Requests
        in flight keep scoring with the probes they started with, to their last token."""
        if self._engine is None:
            self._replace_now(ProbePlan.build(self.layout, probes, self.plan), probes)
        else:
            self._call(self._replace(probes)).result()

    def _replace_now(self, plan: ProbePlan, probes: Sequence[MonitoredProbe]) -> None:
        monitor = Monitor(self.loaded, list(probes))
        with self._lock:
            self.plan, self._monitor = plan, monitor

    def prompt_tokens(self, messages: list[dict[str, str]], limit: int) -> int:  # noqa: ARG002
        """Counted exactly (the interface allows stopping early; the routes' body limit
        already bounds the work)."""
        with self._lock:
            monitor = self._monitor
        return monitor.prompt_length(messages)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delivery, None]:
        def submit(sink: Callable[[Delivery], None]) -> None:
            self._call(self._track(request, sink))

        async for item in relay(submit, lambda: self.cancel(request.request_id)):
            yield item

    def cancel(self, request_id: str) -> None:
        def cancel() -> None:
            task = self._tasks.get(request_id)
            if task is not None:
                task.cancel()

        self._loop.call_soon_threadsafe(cancel)

    # -- engine loop -------------------------------------------------------------------------

    def _call(self, coroutine: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def _start(self) -> None:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.collector = ScoreCollector()
        setup_environment(self.collector, self.choice)
        args = AsyncEngineArgs(**engine_args(self.loaded, self.layout, self.choice))
        self._engine = AsyncLLM.from_engine_args(args)
        info = await self._engine.collective_rpc("pw_install")
        log.info("vLLM workers: %s", info)
        if self.choice.vllm_spare_worker_cores:
            # collective_rpc answers for the first engine only: the others' cores are in
            # the binding, when one is set.
            cores = bound_cores(os.environ.get(BIND_ENV))
            self._off_cores.apply(cores.union(*(set(i.get("cores", ())) for i in info)))
        await self._push_plan(self.plan)
        n = self.loaded.n_layers
        for name, by_site in self.vectors.items():
            layers = {parse_site(site, n).layer: pack(v) for site, v in by_site.items()}
            await self._engine.collective_rpc("pw_set_vector", args=(name, layers))

    async def _replace(self, probes: Sequence[MonitoredProbe]) -> None:
        # Under the plan lock, so no request starts between the build (which pins the
        # columns of the running requests' plans) and the swap; a request that arrives
        # meanwhile waits and starts on the new plan, whose weights are then in place.
        async with self._plan_lock:
            pinned = list(self._running.values())
            plan = ProbePlan.build(self.layout, probes, self.plan, pinned=pinned)
            await self._push_plan(plan)
            self._replace_now(plan, probes)

    async def _push_plan(self, plan: ProbePlan) -> None:
        weights = (pack(plan.weight), pack(plan.bias), plan.version)
        await self._engine.collective_rpc("pw_set_probes", args=weights)

    async def _track(self, request: GenerationRequest, deliver: Callable[[Delivery], None]) -> None:
        task = asyncio.create_task(self._serve(request, deliver))
        self._tasks[request.request_id] = task
        try:
            await task
        except asyncio.CancelledError:
            self.stats.cancelled += 1
        finally:
            self._tasks.pop(request.request_id, None)

    async def _serve(self, request: GenerationRequest, deliver: Callable[[Delivery], None]) -> None:
        rid = request.request_id
        async with self._plan_lock:
            with self._lock:
                monitor, plan = self._monitor, self.plan
            self._running[rid] = plan  # its columns stay pinned until it ends
        try:
            await self._serve_with(request, deliver, monitor, plan)
        finally:
            self._running.pop(rid, None)

    async def _serve_with(
        self,
        request: GenerationRequest,
        deliver: Callable[[Delivery], None],
        monitor: Monitor,
        plan: ProbePlan,
    ) -> None:
        assert self.collector is not None
        rid = request.request_id
        ids = monitor.prompt_ids(request.messages)
        # vLLM stops a sequence at max_model_len tokens, and a token is scored by the step
        # that consumes it: at most max_model_len - P - 1 tokens of a P-token prompt can be
        # scored. Asking for more used to wait SCORE_TIMEOUT_S for the last one, then fail.
        room = self.choice.vllm_max_model_len - len(ids) - 1
        if room < 1:
            deliver(
                Failed(
                    f"the prompt is {len(ids)} tokens, and the vLLM engine's context holds "
                    f"{self.choice.vllm_max_model_len} (--vllm-max-model-len): shorten the "
                    "prompt, or serve with a longer context"
                )
            )
            return
        request = dataclasses.replace(request, max_tokens=min(request.max_tokens, room))
        wake = _Wake(asyncio.get_running_loop())
        self.collector.subscribe(rid, wake.set)
        tokens: list[int] = []
        producer = asyncio.create_task(self._produce(request, ids, plan, tokens, wake))
        try:
            row = monitor.new_row()
            p = len(ids)
            prompt = monitor.read_prompt(row, await self._scores(rid, p - 1, monitor, plan, wake))
            deliver(PromptScored(prompt.prompt_scores, prompt.alerts))
            for k in range(request.max_tokens):
                while len(tokens) <= k:
                    if producer.done():
                        producer.result()  # raises the engine's error, if any
                        raise ProbewatchError(f"vLLM ended request {rid} early")
                    await wake.wait(SCORE_TIMEOUT_S)
                arrived = time.monotonic()
                scores = await self._scores(rid, p + k, monitor, plan, wake)
                self.score_waits.append(time.monotonic() - arrived)
                step = monitor.advance(row, tokens[k], scores, k == request.max_tokens - 1)
                self.stats.tokens += 1
                deliver(TokenGenerated(step))
                if step.finish_reason:
                    break
            deliver(Finished(row.response))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("vLLM request %s failed", rid)
            message = exc.message if isinstance(exc, ProbewatchError) else "generation failed"
            deliver(Failed(message))
        finally:
            if not producer.done():
                producer.cancel()
                await self._engine.abort(rid)
            self.collector.forget(rid)

    async def _produce(
        self,
        request: GenerationRequest,
        ids: list[int],
        plan: ProbePlan,
        tokens: list[int],
        wake: _Wake,
    ) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        options: dict[str, Any] = {"monitor": True}
        if request.steering is not None:
            options["steer"] = {
                "vector": request.steering.vector,
                "strength": request.steering.strength,
            }
        if plan.extracted:
            options["rows"] = list(range(len(ids) - 1, len(ids) + request.max_tokens + 1))
        params = SamplingParams(
            max_tokens=request.max_tokens + 1,  # one more: the step that scores the last token
            temperature=request.temperature,
            seed=request.seed,
            ignore_eos=True,  # we stop at a stop token once it is scored
            output_kind=RequestOutputKind.DELTA,
            detokenize=False,
            extra_args={EXTRA_ARGS_KEY: options},
        )
        prompt: dict[str, Any] = {"prompt_token_ids": ids}
        if request.steering is not None:
            # A steered prompt's KV differs from the same prompt's unsteered KV: never share
            # prefix-cache blocks between them (vLLM hashes the salt into the block keys).
            prompt["cache_salt"] = (
                f"probewatch-steer:{request.steering.vector}:{request.steering.strength}"
            )
        async for output in self._engine.generate(prompt, params, request_id=request.request_id):
            tokens.extend(output.outputs[0].token_ids)
            wake.set()

    async def _scores(
        self, rid: str, position: int, monitor: Monitor, plan: ProbePlan, wake: _Wake
    ) -> torch.Tensor:
        """Raw scores [n_probes] of one position, waiting for them to arrive."""
        assert self.collector is not None
        deadline = time.monotonic() + SCORE_TIMEOUT_S
        while True:
            entry = self.collector.get(rid)
            assert entry is not None
            fused = entry.scores.get(position)
            rows = entry.rows.get(position) if plan.extracted else None
            if fused is not None and (rows is not None or not plan.extracted):
                x = torch.from_numpy(fused.copy()).unsqueeze(0)
                r = torch.from_numpy(rows.copy()).unsqueeze(0) if rows is not None else None
                return plan.scores(monitor.probes, x, r)[0]
            if time.monotonic() > deadline:
                raise ProbewatchError(f"no probe scores arrived for position {position} of {rid}")
            await wake.wait(max(deadline - time.monotonic(), 0.0))


def vllm_engine(loaded: LoadedModel, probes: Sequence[MonitoredProbe], config: Any) -> Engine:
    """The server's engine factory for `engine = "vllm"` (config: a ServerConfig)."""
    from probewatch.server.registry import VectorRegistry

    vectors = VectorRegistry(config.vectors_dir, loaded).vectors
    return VllmEngine(loaded, probes, config, vectors)
