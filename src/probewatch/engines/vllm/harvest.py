"""`probewatch harvest --engine vllm`: the activation store written from a vLLM engine.

`VllmCapture` has `ActivationCapture`'s interface (`site_names`, `run(batch) -> Captured`),
so `store.harvest` writes shards, manifest and resume state exactly as on the HF path.
Each example is one request of one prompt token step (`max_tokens=1`): its prompt rows are
computed in the prefill, and the worker sends back the tapped rows of just the positions
the store keeps (`positions` last/all/mask, chosen by the same `select_positions`). The
engine runs without prefix caching, because a cached prompt position is never computed
and so has no row to send.
"""

import itertools
import time
from types import TracebackType
from typing import Any

import torch

from probewatch.capture import Captured, select_positions
from probewatch.config import EngineChoice, HarvestSpec
from probewatch.data.base import Dataset
from probewatch.engines.vllm import check_vllm_version
from probewatch.engines.vllm.engine import engine_args, setup_environment
from probewatch.engines.vllm.layout import EXTRA_ARGS_KEY, Layout
from probewatch.engines.vllm.transport import ScoreCollector
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.sites import expand_sites
from probewatch.store import ActivationStore, harvest
from probewatch.tokens import Batch

_ids = itertools.count()


class VllmCapture:
    """Captures `sites` at `positions` through a vLLM engine (started on enter)."""

    def __init__(
        self,
        loaded: LoadedModel,
        sites: str | list[str],
        positions: str = "last",
        choice: EngineChoice | None = None,
    ) -> None:
        check_vllm_version()
        self.loaded = loaded
        self.site_names = [s.name for s in expand_sites(sites, loaded.n_layers)]
        self.positions = positions
        self.choice = choice or EngineChoice(engine="vllm")
        self.layout = Layout(
            n_layers=loaded.n_layers,
            d_model=loaded.d_model,
            sites=self.site_names,
            k_max=1,
            capture=True,
        )
        self._llm: Any = None
        self._collector: ScoreCollector | None = None

    def __enter__(self) -> "VllmCapture":
        from vllm import LLM

        self._collector = ScoreCollector()
        setup_environment(self._collector, self.choice)
        args = engine_args(self.loaded, self.layout, self.choice, prefix_caching=False)
        self._llm = LLM(**args)
        self._llm.collective_rpc("pw_install")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._llm is not None:
            self._llm.llm_engine.engine_core.shutdown()
            self._llm = None
        if self._collector is not None:
            self._collector.close()
            self._collector = None

    def run(self, batch: Batch) -> Captured:
        """The activations of `batch` (right-padded, as `encode` makes it) at the chosen
        positions, in `ActivationCapture.run`'s row order."""
        from vllm import SamplingParams

        assert self._llm is not None and self._collector is not None, "use it as a context"
        rows, cols = select_positions(batch.attention_mask, self.positions, batch.token_mask)
        engine = self._llm.llm_engine
        requests = []
        for r in range(batch.input_ids.shape[0]):
            length = int(batch.attention_mask[r].sum())
            keep = cols[rows == r].tolist()
            rid = f"harvest{next(_ids)}"
            self._collector.subscribe(rid)
            params = SamplingParams(max_tokens=1, extra_args={EXTRA_ARGS_KEY: {"rows": keep}})
            prompt = {"prompt_token_ids": batch.input_ids[r, :length].tolist()}
            engine.add_request(rid, prompt, params)
            requests.append((rid, keep))
        while engine.has_unfinished_requests():
            engine.step()
        width = self.loaded.d_model
        parts: list[torch.Tensor] = []
        for rid, keep in requests:
            got = self._wait(rid, keep)
            parts.extend(torch.from_numpy(got[p].copy()) for p in keep)
            self._collector.forget(rid)
        stacked = torch.stack(parts) if parts else torch.zeros(0, self.layout.width)
        acts = {
            site: stacked[:, i * width : (i + 1) * width].contiguous()
            for i, site in enumerate(self.layout.sites)
        }
        return Captured({s: acts[s] for s in self.site_names}, rows, cols)

    def _wait(self, rid: str, keep: list[int], timeout: float = 60.0) -> dict[int, Any]:
        """The worker sends a step's rows before the step returns; the PULL thread files
        them a moment later."""
        assert self._collector is not None
        deadline = time.monotonic() + timeout
        while True:
            entry = self._collector.get(rid)
            if entry is not None and all(p in entry.rows for p in keep):
                return entry.rows
            if time.monotonic() > deadline:
                raise ProbewatchError(f"the vLLM engine sent no activations for {rid}")
            time.sleep(0.002)


def harvest_vllm(
    loaded: LoadedModel, dataset: Dataset, spec: HarvestSpec, progress: bool = True
) -> ActivationStore:
    """`store.harvest` through vLLM, built as `spec` (a HarvestSpec is an EngineChoice) says."""
    capture = VllmCapture(loaded, spec.sites, spec.positions, spec)
    with capture:
        return harvest(loaded, dataset, spec, progress=progress, capture=capture)
