"""Rendering prompt templates off the event loop, in worker processes that are killed on timeout.

Why processes: a template's loops can be driven by the caller's variables, and rendering one on
the event loop blocks every other request. A thread would free the loop, but a thread cannot be
interrupted, so a render that never ends would hold it (and its CPU) for ever. Counting loop
iterations inside the sandbox would have to hook every construct that can spin or allocate
(nested loops, recursive macros, filters, repetition), and the one it missed would block again.
A process can be killed whatever it is doing: when `PROXY_TEMPLATE_RENDER_SECONDS` is spent, the
worker gets SIGKILL, a fresh one replaces it on the next render, and the caller gets 422.

`PROXY_TEMPLATE_WORKERS` workers at most, each rendering one template at a time; they are started
on first use, reused, and killed at shutdown. The budget counts from when a worker takes the job:
waiting for a free worker is bounded by the per-user rate and concurrency limits, which are
applied before any rendering. The sandbox itself (and the output cap, checked as the text is
produced) is `proxy.services.template_sandbox`, which is also the worker's script.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from proxy.core.errors import ProxyError, RequestInvalid
from proxy.core.settings import Settings

log = logging.getLogger("proxy.templates")

WORKER_SCRIPT = Path(__file__).resolve().parent / "template_sandbox.py"
# Starting Python and importing Jinja: not part of a render's budget.
WORKER_START_SECONDS = 30.0


class RendererUnavailable(ProxyError):
    status_code = 503

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class _WorkerGone(Exception):
    pass


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, max_chars: int, seconds: float) -> _Worker:
        # -I: none of the proxy's environment (PYTHONPATH, the current directory) reaches the
        # worker's imports, and none of its secrets reach the worker's environment.
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", str(WORKER_SCRIPT), str(max_chars), str(seconds),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"},
            # One answer is one line: the whole output, each character escaped to at most 12
            # bytes (a surrogate pair), plus room for the envelope or an error message.
            limit=12 * max_chars + 65536,
        )
        worker = cls(process)
        try:
            ready = await asyncio.wait_for(worker.read(), WORKER_START_SECONDS)
        except BaseException:
            await worker.kill()
            raise
        if ready != {"ready": True}:
            await worker.kill()
            raise _WorkerGone(f"unexpected first line from the worker: {ready!r}")
        return worker

    async def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise _WorkerGone(f"the worker exited ({await self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ask(self, job: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(job, ensure_ascii=True).encode() + b"\n")
        await self.process.stdin.drain()
        return await self.read()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


class TemplateRunner:
    def __init__(self, settings: Settings) -> None:
        self.seconds = settings.proxy_template_render_seconds
        self.max_chars = settings.proxy_template_max_output_chars
        self._free = asyncio.Semaphore(settings.proxy_template_workers)
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()

    async def render(self, name: str, source: str, variables: dict[str, Any]) -> str:
        """The rendered text; RequestInvalid (422) for anything the template did wrong."""
        async with self._free:
            worker = self._idle.pop() if self._idle else await self._start()
            try:
                answer = await asyncio.wait_for(
                    worker.ask({"source": source, "variables": variables}), self.seconds)
            except BaseException as exc:
                # Timed out, died, or the caller went away mid-render: this worker's state is
                # unknown (it may still be rendering), so it is never reused.
                self._all.discard(worker)
                await worker.kill()
                if isinstance(exc, TimeoutError):
                    raise RequestInvalid(
                        f"template '{name}' took longer than {self.seconds:g} s to render and "
                        "was stopped (PROXY_TEMPLATE_RENDER_SECONDS)") from None
                if isinstance(exc, _WorkerGone | OSError | ValueError):
                    raise RequestInvalid(
                        f"template '{name}' could not be rendered: the renderer stopped (it "
                        "may have needed more memory than a template may use)") from exc
                raise
            self._idle.append(worker)
        if answer.get("ok") is True:
            return str(answer["text"])
        message = f"template '{name}' {answer.get('error', 'could not be rendered')}"
        if answer.get("kind") == "output":
            message += " (PROXY_TEMPLATE_MAX_OUTPUT_CHARS)"
        raise RequestInvalid(message)

    async def _start(self) -> _Worker:
        try:
            worker = await _Worker.start(self.max_chars, self.seconds)
        except (OSError, TimeoutError, _WorkerGone, ValueError) as exc:
            log.error("could not start a template worker: %s", exc)
            raise RendererUnavailable("template renderer unavailable; try again shortly") \
                from exc
        self._all.add(worker)
        return worker

    async def aclose(self) -> None:
        workers, self._all, self._idle = list(self._all), set(), []
        for worker in workers:
            await worker.kill()
