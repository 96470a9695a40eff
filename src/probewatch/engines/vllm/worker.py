"""The worker side (vLLM's `worker_extension_cls`): runs in every worker process, next to
the model. Its methods are called with `collective_rpc("pw_...")`; vLLM forbids an
extension to override the worker's own methods, so everything here is prefixed.

`pw_install` wraps two methods of this worker's model runner instance:
- `execute_model(scheduler_output)`: records each new request's options
  (`SamplingParams.extra_args["probewatch"]`), forgets finished requests, and after the
  step publishes the rows of every monitored request (rank 0 only);
- the point between input preparation and the forward, where the row layout is known and
  the steering rows are filled: the V1 runner's `_model_forward` (vLLM 0.32 on CPU), or
  Model Runner V2's `prepare_inputs` (0.32's GPU default; `layout.mrv2_rows`, untested on
  a GPU here). Which one is chosen from the runner's class, and the release is checked.
"""

import os
from typing import Any

import numpy as np
import torch

from probewatch.engines.vllm import check_vllm_version
from probewatch.engines.vllm.cpu import thread_cores
from probewatch.engines.vllm.layout import EXTRA_ARGS_KEY, StepRows, mrv2_rows, v1_rows
from probewatch.engines.vllm.transport import ADDRESS_ENV, Packed, ScorePublisher, unpack


def runner_kind(runner: Any) -> str:
    """ "mrv2" for Model Runner V2 (vllm.v1.worker.gpu.model_runner), else "v1"."""
    return "mrv2" if type(runner).__module__.startswith("vllm.v1.worker.gpu.") else "v1"


class ProbeWorkerExtension:
    model_runner: Any
    vllm_config: Any
    _pw_info: dict[str, Any]

    def pw_install(self) -> dict[str, Any]:
        """Wrap the runner (once); returns what this worker does, for the caller's log."""
        check_vllm_version()
        if getattr(self, "_pw_installed", False):
            return self._pw_info
        runner = self.model_runner
        self._pw_model = runner.get_model()
        self._pw_options: dict[str, dict[str, Any]] = {}
        self._pw_vectors: dict[str, dict[int, torch.Tensor]] = {}
        self._pw_step: StepRows | None = None
        self._pw_dirty = 0  # steering rows written last step (zeroed before the next)
        self._pw_steps = 0
        self._pw_version = 0
        self._pw_publisher = self._pw_connect()
        kind = runner_kind(runner)
        original_execute = runner.execute_model

        def execute_model(scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
            self._pw_admit(scheduler_output)
            self._pw_step = None
            output = original_execute(scheduler_output, *args, **kwargs)
            if self._pw_step is not None:
                self._pw_publish(self._pw_step)
            return output

        runner.execute_model = execute_model
        if kind == "mrv2":
            original_prepare = runner.prepare_inputs

            def prepare_inputs(*args: Any, **kwargs: Any) -> Any:
                batch = original_prepare(*args, **kwargs)
                self._pw_before_forward(mrv2_rows(batch))
                return batch

            runner.prepare_inputs = prepare_inputs
        else:
            original_forward = runner._model_forward

            def model_forward(*args: Any, **kwargs: Any) -> Any:
                self._pw_before_forward(v1_rows(runner))
                return original_forward(*args, **kwargs)

            runner._model_forward = model_forward
        self._pw_installed = True
        self._pw_info = {
            "runner": kind,
            "publishes": self._pw_publisher is not None,
            "cores": sorted(thread_cores()),  # where vLLM bound this worker's threads
        }
        return self._pw_info

    def _pw_connect(self) -> ScorePublisher | None:
        from vllm.distributed import get_pp_group, get_tp_group

        address = os.environ.get(ADDRESS_ENV)
        # Residual streams are replicated across TP ranks and the scores are computed on
        # the last pipeline stage: one publisher per engine.
        if address and get_tp_group().rank_in_group == 0 and get_pp_group().is_last_rank:
            return ScorePublisher(address)
        return None

    def pw_set_probes(self, weight: Packed, bias: Packed, version: int) -> int:
        """Replace the fused probe weights in place (same address: no recompilation)."""
        model = self._pw_model
        model.pw_weight.copy_(unpack(weight))
        model.pw_bias.copy_(unpack(bias))
        self._pw_version = version
        return version

    def pw_set_vector(self, name: str, packed: dict[int, Packed]) -> list[int]:
        """Load (or replace) a steering vector: layer -> [d]. Only steerable layers."""
        vectors = {int(layer): unpack(v) for layer, v in packed.items()}
        buffers = self._pw_model.steer_buffers()
        layout = self._pw_model.pw_layout
        bad = [layer for layer in vectors if layer not in layout.steer_layers]
        if bad:
            raise ValueError(
                f"layers {bad} are not steerable; the engine steers {layout.steer_layers}"
            )
        self._pw_vectors[name] = {
            layer: v.to(buffers[layer].dtype).to(buffers[layer].device)
            for layer, v in vectors.items()
            if layer in buffers
        }
        return sorted(vectors)

    def pw_stats(self) -> dict[str, Any]:
        sent = self._pw_publisher.sent if self._pw_publisher else 0
        return {"steps": self._pw_steps, "messages": sent, "tracked": len(self._pw_options)}

    def _pw_admit(self, scheduler_output: Any) -> None:
        for new in scheduler_output.scheduled_new_reqs:
            params = new.sampling_params
            extra = (params.extra_args or {}) if params is not None else {}
            self._pw_options[new.req_id] = dict(extra.get(EXTRA_ARGS_KEY) or {})
        for rid in scheduler_output.finished_req_ids:
            self._pw_options.pop(rid, None)

    def _pw_before_forward(self, step: StepRows) -> None:
        self._pw_step = step
        buffers = self._pw_model.steer_buffers()
        if not buffers:
            return
        if self._pw_dirty:
            for buffer in buffers.values():
                buffer[: self._pw_dirty].zero_()
            self._pw_dirty = 0
        for rid, first_row, n, _ in step.spans():
            steer = self._pw_options.get(rid, {}).get("steer")
            if not steer:
                continue
            vector = self._pw_vectors[steer["vector"]]
            for layer, delta in vector.items():
                buffers[layer][first_row : first_row + n] += float(steer["strength"]) * delta
            self._pw_dirty = max(self._pw_dirty, first_row + n)

    def _pw_publish(self, step: StepRows) -> None:
        self._pw_steps += 1
        if self._pw_publisher is None:
            return
        model = self._pw_model
        layout = model.pw_layout
        reqs, score_rows, kept_rows = [], [], []
        for rid, first_row, n, first_pos in step.spans():
            options = self._pw_options.get(rid)
            if options is None or not options.get("monitor", True):
                continue
            score_rows.append(np.arange(first_row, first_row + n))
            wanted = options.get("rows")
            kept: list[int] = []
            if wanted and layout.capture:
                positions = np.arange(first_pos, first_pos + n)
                keep = np.ones(n, bool) if wanted == "all" else np.isin(positions, wanted)
                kept = positions[keep].tolist()
                kept_rows.append(np.arange(first_row, first_row + n)[keep])
            reqs.append({"id": rid, "pos": first_pos, "n": n, "rows": kept})
        if not reqs:
            return
        index = torch.from_numpy(np.concatenate(score_rows))
        scores = model.pw_scores[index.to(model.pw_scores.device)].cpu().numpy()
        rows = np.zeros((0, max(layout.width, 1)), np.float32)
        if kept_rows:
            at = torch.from_numpy(np.concatenate(kept_rows)).to(model.pw_rows.device)
            rows = model.pw_rows[at].cpu().numpy()
        header = {
            # the engine's DP rank: vLLM resets data_parallel_rank to 0 in each engine of a
            # dense model (they run as independent DP=1 engines) and keeps it here
            "engine": int(self.vllm_config.parallel_config.data_parallel_index),
            "version": self._pw_version,
            "k": layout.k_max,
            "width": layout.width,
            "reqs": reqs,
        }
        self._pw_publisher.send(header, scores, rows)
