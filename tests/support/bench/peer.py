"""A peer gateway measured beside the proxy (`scripts/bench --peer litellm`): LiteLLM's proxy
server, installed in a virtual environment of its own (never the project's), started as a
process in front of the same simulator, and called in OpenAI's shape.

What it is configured to do, so that the comparison says what it compares: one model,
`llama3.2`, sent to the simulator through LiteLLM's Ollama chat provider; a master key that
every request carries as a bearer key (the proxy's requests carry a JWT); no database (LiteLLM's
DB-less mode: no spend logs, no virtual keys, no per-user limits or budgets); one worker, as the
single-process proxy configurations; logging at errors only. The proxy runs with auth, limits,
an audit row per request and metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.child_process import die_with_parent, stop_child, wait_for_child
from tests.support.proxy_process import free_port
from tests.support.timing import scaled

PEERS = ("litellm",)
LITELLM_VERSION = "1.81.0"  # the pin
# Never these, whatever is asked: the issue excludes them by name.
EXCLUDED_VERSIONS = frozenset({"1.82.7", "1.82.8"})
MODEL = "llama3.2"
READY_PATH = "/health/readiness"
WORKERS = 1  # as the single-process proxy configurations (its default: one per CPU)
# The requests are sent to LiteLLM's OpenAI route: what it serves.
CHAT_PATH = "/v1/chat/completions"


def requirement(version: str = LITELLM_VERSION) -> str:
    """The pip requirement for one LiteLLM version: exact, and never an excluded one."""
    if version.strip() in EXCLUDED_VERSIONS:
        raise ValueError(f"LiteLLM {version} is excluded: never 1.82.7 or 1.82.8")
    return f"litellm[proxy]=={version}"


def cache_dir() -> Path:
    """Where the peers' environments live: $XDG_CACHE_HOME/llm-bench, or ~/.cache/llm-bench."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llm-bench"


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _step(command: list[str]) -> None:
    """One install command, its output passed on to stderr; a clear error naming it if it
    fails."""
    say("$ " + " ".join(command))
    done = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if done.returncode:
        raise RuntimeError(f"installing LiteLLM failed: `{' '.join(command)}` exited with "
                           f"{done.returncode} (its output is above)")


def install(version: str = LITELLM_VERSION) -> Path:
    """LiteLLM's `litellm` command in its own virtual environment, made on first use (minutes)
    and reused after; the environment records the version it holds once the install is
    complete, so that an interrupted one is made again."""
    wanted = requirement(version)
    venv = cache_dir() / f"litellm-{version}"
    binary, marker = venv / "bin" / "litellm", venv / "installed"
    if binary.exists() and marker.exists() and marker.read_text().strip() == wanted:
        return binary
    say(f"installing {wanted} into {venv} (once; minutes)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    _step([sys.executable, "-m", "venv", "--clear", str(venv)])
    pip = str(venv / "bin" / "python")
    _step([pip, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
           wanted])
    marker.write_text(wanted + "\n")
    say(f"installed {wanted}")
    return binary


def config(sim_url: str, master_key: str) -> dict[str, Any]:
    """LiteLLM's proxy config: one model mapped to the simulator through the Ollama chat
    provider, a master key, no database, quiet logging."""
    return {
        "model_list": [{
            "model_name": MODEL,
            "litellm_params": {"model": f"ollama_chat/{MODEL}", "api_base": sim_url},
        }],
        "litellm_settings": {"set_verbose": False, "suppress_debug_info": True,
                             "telemetry": False},
        # No database_url: DB-less mode. The master key is the only key.
        "general_settings": {"master_key": master_key},
    }


# uvicorn's logging (`--log_config`): warnings and errors only, no line per request (its
# default logs every request, which the proxy, at PROXY_LOG_LEVEL=warning, does not).
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain",
                            "stream": "ext://sys.stderr"}},
    "loggers": {name: {"handlers": ["stderr"], "level": "WARNING", "propagate": False}
                for name in ("uvicorn", "uvicorn.access")},
}


def environment(log_level: str = "ERROR") -> dict[str, str]:
    """LiteLLM's process environment: the bench's, less any database or key of its own, with
    the model price map read from the package (no download at start) and logging quiet."""
    kept = {k: v for k, v in os.environ.items()
            if not k.startswith(("LITELLM_", "DATABASE_URL", "OPENAI_", "OLLAMA_"))
            and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**kept, "LITELLM_LOG": log_level, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_MODE": "PRODUCTION"}


def openai_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The bench's Ollama generate body as an OpenAI chat completion request: the same model,
    prompt, token count and stream flag."""
    return {"model": body["model"], "messages": [{"role": "user", "content": body["prompt"]}],
            "max_tokens": body["options"]["num_predict"], "stream": body["stream"]}


def described(name: str, version: str = LITELLM_VERSION) -> dict[str, Any]:
    """What a run records of its peer: which one, which version, how it was set up."""
    example = config("SIMULATOR_URL", "MASTER_KEY")
    return {"name": name, "version": version, "route": CHAT_PATH,
            "model": example["model_list"][0]["litellm_params"]["model"], "workers": WORKERS}


@dataclass
class Peer:
    name: str
    url: str  # the chat completions endpoint, complete
    key: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _not_ready(base: str) -> str | None:
    """None once LiteLLM's readiness route answers 200; what it answered until then."""
    try:
        response = httpx.get(base + READY_PATH, timeout=scaled(2))
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if response.status_code == 200 else f"{response.status_code} {response.text}"


@contextlib.contextmanager
def litellm(sim_url: str, workdir: Path, version: str = LITELLM_VERSION) -> Iterator[Peer]:
    """LiteLLM's proxy in front of the simulator, on a free port, until the end of the block."""
    binary = install(version)
    key = "sk-bench-" + secrets.token_hex(16)
    config_path, log_config = workdir / "litellm.yaml", workdir / "litellm-logging.json"
    # JSON is YAML: LiteLLM reads it with its YAML loader.
    config_path.write_text(json.dumps(config(sim_url, key), indent=2) + "\n")
    log_config.write_text(json.dumps(LOG_CONFIG, indent=2) + "\n")
    port = free_port()
    log_path = workdir / "litellm.log"
    command = [str(binary), "--config", str(config_path), "--host", "127.0.0.1",
               "--port", str(port), "--num_workers", str(WORKERS), "--telemetry", "False",
               "--log_config", str(log_config)]
    say(f"starting LiteLLM {version}: {' '.join(command)}")
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=workdir, env=environment(), stdout=log,
                                   stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    base = f"http://127.0.0.1:{port}"
    peer = Peer("litellm", base + CHAT_PATH, key, process, log_path)
    try:
        # Its start imports a great deal: tens of seconds on a busy machine.
        wait_for_child(process, "LiteLLM", lambda: _not_ready(base), scaled(120), peer.log,
                       interval=0.25)
        yield peer
    finally:
        stop_child(process, scaled(10))
