"""The `vllm.general_plugins` entry point: vLLM calls `register` in each of its processes
(API, engine core, workers), before any model is built."""

import logging

from probewatch.engines.vllm.layout import ARCHITECTURES
from probewatch.errors import ProbewatchError

log = logging.getLogger(__name__)


def register() -> None:
    """Register our model classes with vLLM's registry. Classes, not import paths: vLLM
    inspects a lazily registered class in a subprocess, which took 90 s on the busy CI
    machine. Under another vLLM release nothing is registered: vLLM itself keeps working,
    and our engine refuses to start."""
    from vllm import ModelRegistry

    from probewatch.engines.vllm import check_vllm_version

    try:
        check_vllm_version()
    except ProbewatchError as exc:
        log.warning("probewatch plugin not registered: %s", exc.message)
        return
    from probewatch.engines.vllm import models

    known = set(ModelRegistry.get_supported_archs())
    for ours in ARCHITECTURES.values():
        if ours not in known:
            ModelRegistry.register_model(ours, getattr(models, ours))
