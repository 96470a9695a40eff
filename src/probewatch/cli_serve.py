"""`probewatch serve`: every ServerConfig field is a flag; the probes directory and the port
are checked before the model loads and before any URL is printed."""

import argparse
import socket
import sys
from typing import Any

from probewatch.cli_args import add_command, add_config_args, config_from_args
from probewatch.config import ServerConfig
from probewatch.errors import ProbewatchError

CARD = "card.json"


def check_port_free(config: ServerConfig) -> None:
    """Bind the port once, so a clash is reported before any URL is printed."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((config.host, config.port))
        except OSError as exc:
            raise ProbewatchError(
                f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
                hint="another server holds it: stop it, or pass --port N",
            ) from exc


def check_probes_dir(config: ServerConfig) -> None:
    """A probes directory that does not exist is a typo, not an empty suite."""
    root = config.probes_dir
    if not root.is_dir():
        raise ProbewatchError(
            f"no probe directory at {root}",
            hint="train probes first (probewatch train ... --out DIR/NAME), or run probewatch demo",
        )
    if not any((child / CARD).is_file() for child in root.iterdir()):
        print(
            f"warning: {root} holds no probes yet; scores appear once probes are uploaded",
            file=sys.stderr,
        )


def serve(config: ServerConfig, loaded: Any = None) -> None:
    """Check, build the app (on `loaded`, or the model the config names), print the URL,
    then run uvicorn (blocks)."""
    config.check()
    check_probes_dir(config)
    check_port_free(config)
    import uvicorn  # after the checks: a bad argument fails without loading the stack

    from probewatch.server.app import create_app

    app = create_app(config, loaded)
    print(f"probewatch serving {config.model} with the probes in {config.probes_dir}")
    base = f"http://{config.host}:{config.port}"
    print(f"dashboard: {base}/   API: {base}/v1", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")


def cmd_serve(args: argparse.Namespace) -> None:
    serve(config_from_args(ServerConfig, args))


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "serve", cmd_serve, "OpenAI-compatible server with live scores")
    add_config_args(p, ServerConfig)
