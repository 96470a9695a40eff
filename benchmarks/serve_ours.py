"""Our server with 8 probes on 3 sites, as its own process (so the benchmark's client
threads do not share its interpreter): `python -m benchmarks.serve_ours --port 8765`."""

import argparse
import sys
import tempfile
from pathlib import Path

import uvicorn

from benchmarks.workloads import probes
from probewatch.models import load_model
from probewatch.models.loading import LoadedModel
from probewatch.probes.artifact import save_probe
from probewatch.server.app import create_app
from probewatch.server.config import ServerConfig


def config_for(loaded: LoadedModel, root: Path, port: int) -> ServerConfig:
    for artifact in probes(loaded):
        save_probe(artifact, root / "probes" / artifact.card["name"])
    return ServerConfig(
        probes_dir=root / "probes",
        events_db=root / "events.sqlite",
        port=port,
        max_batch=8,
        max_output_tokens=1024,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    loaded = load_model("default")
    with tempfile.TemporaryDirectory() as root:
        config = config_for(loaded, Path(root), args.port)
        uvicorn.run(create_app(config, loaded), host="127.0.0.1", port=args.port, log_level="error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
