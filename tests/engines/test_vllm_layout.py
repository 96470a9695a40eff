"""The vLLM engine's plan (taps, fused columns, refusals), batch-layout adapters and version
check: no vLLM needed, so these run in the main venv too."""

import dataclasses
import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from probewatch.engines.vllm import SUPPORTED_VLLM, check_vllm_version
from probewatch.engines.vllm.layout import (
    Layout,
    ProbePlan,
    StepRows,
    external_id,
    mrv2_rows,
    our_architecture,
    tap_index,
    v1_rows,
)
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.monitor import MonitoredProbe
from probewatch.probes import make_probe
from probewatch.probes.artifact import ProbeArtifact, build_card
from tests.helpers import tiny_model


def _probe(loaded: LoadedModel, name: str, site: str, kind: str = "logistic") -> MonitoredProbe:
    gen = torch.Generator().manual_seed(len(name))
    x = torch.randn(64, loaded.d_model, generator=gen)
    y = (x[:, 0] > 0).float()
    probe = make_probe(kind, **({"max_epochs": 3} if kind == "mlp" else {})).fit(x, y)
    card = build_card(probe, loaded, site, "last", {"name": name, "hash": "x"}, {})
    return MonitoredProbe.from_artifact(name, ProbeArtifact(probe, card))


def test_sites_map_to_vllm_aux_indices_and_inner_sites_are_refused() -> None:
    assert tap_index("embed", 4) == 0
    assert tap_index("resid.2", 4) == 3  # the stream after block 2 = aux index 3
    assert tap_index("resid.3", 4) == 4
    assert tap_index("final_norm", 4) == 5
    with pytest.raises(ProbewatchError, match="inside a block"):
        tap_index("mlp_out.1", 4)
    layout = Layout(n_layers=4, d_model=8, sites=["final_norm", "resid.3", "resid.1", "resid.1"])
    assert layout.sites == ["resid.1", "resid.3", "final_norm"]
    assert layout.aux_layers == (2, 4)
    assert layout.taps_final and layout.width == 24
    assert layout.block("resid.3") == slice(8, 16)
    assert Layout.from_dict(layout.to_dict()) == layout
    with pytest.raises(ProbewatchError, match="out of range"):
        Layout(n_layers=4, d_model=8, steer_layers=[4])


def test_architecture_choice_names_the_supported_families() -> None:
    assert our_architecture(["LlamaForCausalLM"]) == "ProbewatchLlamaForCausalLM"
    assert our_architecture(["Gemma3ForCausalLM"]) == "ProbewatchGemma3ForCausalLM"
    with pytest.raises(ProbewatchError, match="GPT2LMHeadModel") as err:
        our_architecture(["GPT2LMHeadModel"])
    assert "Qwen2ForCausalLM" in (err.value.hint or "")


def test_plan_fuses_affine_probes_extracts_the_others_and_keeps_columns() -> None:
    loaded = tiny_model()
    probes = [_probe(loaded, "a", "resid.1"), _probe(loaded, "m", "resid.2", "mlp")]
    layout = Layout(loaded.n_layers, loaded.d_model, ["resid.1", "resid.2"], 3, capture=True)
    plan = ProbePlan.build(layout, probes)
    assert plan.columns == {"a": 0} and plan.extracted == {"m": "resid.2"}
    rows = torch.randn(5, layout.width)
    fused = rows @ plan.weight + plan.bias
    got = plan.scores(probes, fused, rows)
    for i, probe in enumerate(probes):
        expected = probe.artifact.probe.score(rows[:, layout.block(probe.artifact.site)])
        torch.testing.assert_close(got[:, i], expected.reshape(-1), atol=1e-4, rtol=1e-4)
    # A new probe takes a free column; the running ones keep theirs (requests in flight).
    grown = ProbePlan.build(layout, [_probe(loaded, "b", "resid.2"), *probes], plan)
    assert grown.columns == {"a": 0, "b": 1} and grown.version == plan.version + 1
    shrunk = ProbePlan.build(
        layout, [grown_probe for grown_probe in [_probe(loaded, "b", "resid.2")]], grown
    )
    assert shrunk.columns == {"b": 1}


def test_columns_read_by_requests_in_flight_are_given_to_no_other_probe() -> None:
    loaded = tiny_model()
    layout = Layout(loaded.n_layers, loaded.d_model, ["resid.1", "resid.2"], k_max=3)
    a, b = _probe(loaded, "a", "resid.1"), _probe(loaded, "b", "resid.2")
    running = ProbePlan.build(layout, [a, b])  # a request in flight reads b's column 1
    # b deleted, c uploaded: c takes a free column, and column 1 keeps b's weights.
    plan = ProbePlan.build(layout, [a, _probe(loaded, "c", "resid.2")], running, [running])
    assert plan.columns == {"a": 0, "c": 2}
    assert torch.equal(plan.weight[:, 1], running.weight[:, 1]) and plan.bias[1] == running.bias[1]
    # A probe uploaded again under b's name (new weights) does not take it either: no
    # column is left, and the refusal says why.
    again = _probe(loaded, "b", "resid.1")
    with pytest.raises(ProbewatchError, match="1 of them still read by requests in flight"):
        ProbePlan.build(layout, [*[a, _probe(loaded, "c", "resid.2")], again], plan, [running])
    # Once that request has ended, the column is free again.
    done = ProbePlan.build(layout, [a, _probe(loaded, "c", "resid.2"), again], plan)
    assert done.columns == {"a": 0, "c": 2, "b": 1}
    assert not torch.equal(done.weight[:, 1], running.weight[:, 1])


def test_plan_refuses_what_the_engine_cannot_score() -> None:
    loaded = tiny_model()
    layout = Layout(loaded.n_layers, loaded.d_model, ["resid.1"], k_max=1)
    with pytest.raises(ProbewatchError, match=r"x \(resid.2\).*tapping resid.1"):
        ProbePlan.build(layout, [_probe(loaded, "x", "resid.2")])
    with pytest.raises(ProbewatchError, match="inside a block"):
        ProbePlan.build(layout, [_probe(loaded, "x", "attn_out.1")])
    with pytest.raises(ProbewatchError, match="more than 1 fused"):
        ProbePlan.build(layout, [_probe(loaded, "x", "resid.1"), _probe(loaded, "y", "resid.1")])
    with pytest.raises(ProbewatchError, match="not affine"):
        ProbePlan.build(layout, [_probe(loaded, "m", "resid.1", "mlp")])


def test_v1_runner_rows() -> None:
    runner = SimpleNamespace(
        input_batch=SimpleNamespace(
            num_reqs=2, req_ids=["a-1", "b-2", None], num_computed_tokens_cpu=np.array([0, 7, 0])
        ),
        query_start_loc=SimpleNamespace(np=np.array([0, 5, 6, 6], dtype=np.int32)),
    )
    assert v1_rows(runner).spans() == [("a-1", 0, 5, 0), ("b-2", 5, 1, 7)]


def test_mrv2_rows_on_a_constructed_batch() -> None:
    """Model Runner V2 (vLLM 0.32's GPU default) cannot run here; its InputBatch fields are
    read from a batch built by hand: a chunked prefill resumed at 16, then a decode."""
    batch = SimpleNamespace(
        req_ids=["x-aa", "y-bb"],
        num_reqs=2,
        query_start_loc_np=np.array([0, 8, 9], dtype=np.int32),
        num_computed_tokens_np=np.array([16, 40], dtype=np.int32),
    )
    assert mrv2_rows(batch).spans() == [("x-aa", 0, 8, 16), ("y-bb", 8, 1, 40)]
    try:  # in the vLLM venv: the real dataclass has the fields the adapter reads
        from vllm.v1.worker.gpu.input_batch import InputBatch
    except ImportError:
        return
    names = {f.name for f in dataclasses.fields(InputBatch)}
    assert {"req_ids", "num_reqs", "query_start_loc_np", "num_computed_tokens_np"} <= names


def test_step_rows_and_ids() -> None:
    rows = StepRows(["r-1"], np.array([0, 3]), np.array([4]))
    assert rows.spans() == [("r-1", 0, 3, 4)]
    assert external_id("chatcmpl-abc-1f2e3d4c") == "chatcmpl-abc"


def test_version_check_names_the_supported_release() -> None:
    assert check_vllm_version(f"{SUPPORTED_VLLM}+cpu") == f"{SUPPORTED_VLLM}+cpu"
    with pytest.raises(ProbewatchError, match=f"supports only vLLM {SUPPORTED_VLLM}") as err:
        check_vllm_version("0.31.1")
    assert "vllm==0.32.0" in (err.value.hint or "")


def test_cpu_workers_get_one_core_group_per_rank_when_numa_nodes_are_too_few() -> None:
    from probewatch.config import EngineChoice
    from probewatch.engines.vllm.cpu import cpu_binding

    def choice(tp: int = 1, dp: int = 1) -> EngineChoice:
        return EngineChoice(engine="vllm", vllm_tensor_parallel=tp, vllm_data_parallel=dp)

    assert cpu_binding(choice(), [0, 1], numa_nodes=1) is None  # vLLM's auto binding works
    assert cpu_binding(choice(tp=2), [0, 1, 2, 3], numa_nodes=2) is None
    assert cpu_binding(choice(tp=2), [0, 1], numa_nodes=1) == "0|1"
    assert cpu_binding(choice(tp=2, dp=2), list(range(8)), numa_nodes=1) == "0,1|2,3|4,5|6,7"
    assert cpu_binding(choice(dp=2), [4, 5, 6], numa_nodes=1) == "4|5,6"
    with pytest.raises(ProbewatchError, match="need a CPU core each, and 2 are available"):
        cpu_binding(choice(tp=2, dp=2), [0, 1], numa_nodes=1)


def test_a_binding_names_its_cores_and_auto_names_none() -> None:
    from probewatch.engines.vllm.cpu import bound_cores

    assert bound_cores("0|1") == {0, 1}
    assert bound_cores("0-3|4,6") == {0, 1, 2, 3, 4, 6}
    assert bound_cores("auto") == bound_cores("nobind") == bound_cores(None) == set()


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 or torch.cuda.is_available(),
    reason="needs two CPU cores and no GPU",
)
def test_the_serving_threads_leave_the_workers_cores_and_come_back() -> None:
    from probewatch.engines.vllm.cpu import OffWorkerCores, thread_cores

    allowed = set(os.sched_getaffinity(0))
    worker = {min(allowed)}
    started = threading.Event()
    stop = threading.Event()

    def idle() -> None:
        started.set()
        stop.wait(10)

    thread = threading.Thread(target=idle)  # a thread that exists before the move
    thread.start()
    started.wait(5)
    off = OffWorkerCores()
    try:
        assert off.apply(worker) == allowed - worker
        assert thread_cores() == allowed - worker  # every thread moved, not only this one
        assert off.apply(allowed) is None  # no core would be left: nothing changes
    finally:
        off.restore()
        stop.set()
        thread.join()
    assert thread_cores() == allowed
