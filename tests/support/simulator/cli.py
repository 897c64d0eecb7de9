"""`python -m tests.support.simulator`: flags, `SIM_*` environment variables, serving.

Every flag falls back to an environment variable (`--tokens-per-second` ← `SIM_TOKENS_PER_SECOND`)
so the same simulator runs from a shell, a test helper or a container's environment. The app is
served by a `uvicorn.Server` this module builds itself, because the `refuse` fault needs that
server object and its listening socket.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from tests.support.simulator.app import create_app
from tests.support.simulator.config import ConfigError, SimulatorConfig
from tests.support.simulator.network_faults import ListenerControl

ENV_PREFIX = "SIM_"
_DEFAULTS = SimulatorConfig()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

logger = logging.getLogger("tests.support.simulator")


def _env(name: str, default: Any) -> Any:
    """The `SIM_<NAME>` variable if set (argparse converts string defaults with `type`)."""
    value = os.environ.get(ENV_PREFIX + name.upper())
    return default if value is None else value


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(ENV_PREFIX + name.upper())
    if value is None:
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise SystemExit(f"{ENV_PREFIX}{name.upper()} must be one of {sorted(_TRUE | _FALSE)}")


def _name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.simulator",
        description=(
            "Simulated Ollama server for tests: Ollama's HTTP API (generate and chat with "
            "tools, format and thinking; embed; tags, show, ps, pull, delete) and its "
            "OpenAI-compatible /v1 layer (chat/completions, completions, embeddings, models), "
            "with deterministic output, configurable timing, a bounded queue and injectable "
            "faults (control API under /__sim__/). Every option can also be set through the "
            "environment variable named in brackets; a flag on the command line wins."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default=_env("host", "127.0.0.1"), help="address to bind [SIM_HOST]")
    add("--port", type=int, default=_env("port", 11434), help="port to bind [SIM_PORT]")
    add(
        "--fd",
        type=int,
        default=None,
        help="serve on an inherited, already listening socket with this file descriptor "
        "instead of binding --host/--port (used by run_simulator to avoid port races)",
    )
    add(
        "--first-token-delay",
        type=float,
        default=_env("first_token_delay", _DEFAULTS.first_token_delay),
        metavar="SECONDS",
        help="load + prompt-eval time before the first token [SIM_FIRST_TOKEN_DELAY]",
    )
    add(
        "--tokens-per-second",
        type=float,
        default=_env("tokens_per_second", _DEFAULTS.tokens_per_second),
        metavar="RATE",
        help="generation rate after the first token [SIM_TOKENS_PER_SECOND]",
    )
    add(
        "--models",
        type=_name_list,
        default=_env("models", ",".join(_DEFAULTS.models)),
        metavar="NAME,...",
        help="models present locally, comma-separated; a missing tag means :latest [SIM_MODELS]",
    )
    add(
        "--registry",
        type=_name_list,
        default=_env("registry", ",".join(_DEFAULTS.registry)),
        metavar="NAME,...",
        help="models /api/pull can fetch; others fail like a missing manifest [SIM_REGISTRY]",
    )
    add(
        "--version",
        default=_env("version", _DEFAULTS.version),
        help="version reported by /api/version [SIM_VERSION]",
    )
    add(
        "--num-parallel",
        type=int,
        default=_env("num_parallel", _DEFAULTS.num_parallel),
        metavar="N",
        help="generations running at once, like OLLAMA_NUM_PARALLEL [SIM_NUM_PARALLEL]",
    )
    add(
        "--max-queue",
        type=int,
        default=_env("max_queue", _DEFAULTS.max_queue),
        metavar="N",
        help="generations waiting for a slot before 503, like OLLAMA_MAX_QUEUE [SIM_MAX_QUEUE]",
    )
    add(
        "--pull-duration",
        type=float,
        default=_env("pull_duration", _DEFAULTS.pull_duration),
        metavar="SECONDS",
        help="how long a successful /api/pull takes [SIM_PULL_DURATION]",
    )
    add(
        "--gpu",
        action=argparse.BooleanOptionalAction,
        default=_env_flag("gpu", _DEFAULTS.gpu),
        help="report loaded models as fully in VRAM in /api/ps (size_vram) [SIM_GPU=1|0]",
    )
    add(
        "--log-level",
        default=_env("log_level", "info"),
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn and simulator log level [SIM_LOG_LEVEL]",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        first_token_delay=args.first_token_delay,
        tokens_per_second=args.tokens_per_second,
        models=args.models,
        registry=args.registry,
        version=args.version,
        num_parallel=args.num_parallel,
        max_queue=args.max_queue,
        pull_duration=args.pull_duration,
        gpu=args.gpu,
    )


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # Lets the `refuse` fault, and a restarted simulator, rebind while old connections linger.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    return sock


def serve(config: SimulatorConfig, sock: socket.socket, log_level: str = "info") -> None:
    """Serve the simulator on `sock` until SIGINT/SIGTERM."""
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=log_level,
            lifespan="off",
            # The refuse fault relies on asyncio's Server.close() closing the listening socket.
            loop="asyncio",
            server_header=False,  # Ollama sends no Server header
            # Hung and streaming requests must not hold up a test's teardown for long.
            timeout_graceful_shutdown=1,
        )
    )
    app.state.listener = ListenerControl(server, [sock])
    host, port = sock.getsockname()[:2]
    logger.info(
        "Ollama simulator %s listening on http://%s:%s (models: %s)",
        config.version,
        f"[{host}]" if ":" in host else host,
        port,
        ", ".join(config.models) or "none",
    )
    server.run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.log_level == "trace" else args.log_level.upper(),
        format="%(levelname)s:     %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        try:
            sock = bind_listener(args.host, args.port)
        except OSError as exc:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
    serve(config, sock, args.log_level)
    return 0
