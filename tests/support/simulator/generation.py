"""One simulated generation for /api/generate or /api/chat: queueing, pacing, the final counters.

The timeline mirrors a real runner so that a proxy measuring time-to-first-token and tokens/s
gets meaningful numbers: wait for a slot (503 when the queue is full), spend
`first_token_delay` on "load + prompt eval", then emit one token every `1/tokens_per_second`.
The final object's durations are measured, not computed, so `eval_count / eval_duration`
is the rate the client really saw.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.types import Send

from tests.support.simulator.scheduler import QueueFull
from tests.support.simulator.state import SimulatorState, ollama_timestamp
from tests.support.simulator.streaming import NDJSONWriter, WatchedResponse, send_json

MIDSTREAM_TOKENS = 3
"""Tokens sent before a `midstream_error` fault ends the stream with an error line."""


@dataclass(frozen=True)
class Piece:
    """One streamed object's share of a reply: a token of content or thinking, or tool calls.

    `cost` is how many tokens of generation it stands for: a tool call is parsed out of many
    tokens and only sent once complete, as Ollama's tool parser does.
    """

    kind: Literal["content", "thinking", "tool_calls"]
    text: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()
    cost: int = 1


def pieces_text(pieces: list[Piece], kind: str) -> str:
    return "".join(p.text for p in pieces if p.kind == kind)


@dataclass
class Generation:
    """What to generate and how; built by the route after validation."""

    kind: Literal["generate", "chat"]
    model: str  # echoed as the client spelled it, as Ollama does
    pieces: list[Piece]
    done_reason: str
    prompt_eval_count: int
    stream: bool
    first_token_delay: float
    tokens_per_second: float
    received_ns: int  # time.perf_counter_ns() when the request arrived
    context_prefix: list[int] = field(default_factory=list)  # generate only
    response_ids: list[int] = field(default_factory=list)  # generate only
    fail_with: str | None = None  # midstream_error fault: the error text

    def chunk(self, pieces: list[Piece]) -> dict[str, Any]:
        """The object carrying `pieces` (one while streaming, all of them without a stream),
        with Ollama's field order and its omitted empty `thinking` and `tool_calls`."""
        content, thinking = pieces_text(pieces, "content"), pieces_text(pieces, "thinking")
        calls = [call for p in pieces for call in p.tool_calls]
        body: dict[str, Any] = {"model": self.model, "created_at": ollama_timestamp()}
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            body["message"] = message
        else:
            body["response"] = content
            if thinking:
                body["thinking"] = thinking
        body["done"] = False
        return body

    def final(self, pieces: list[Piece], counters: dict[str, int]) -> dict[str, Any]:
        body = self.chunk(pieces)
        body["done"] = True
        body["done_reason"] = self.done_reason
        if self.kind == "generate":
            body["context"] = [*self.context_prefix, *self.response_ids]
        body.update(counters)
        return body


class GenerationResponse(WatchedResponse):
    """Runs a `Generation` under the slot gate and streams (or returns) its output."""

    def __init__(self, generation: Generation, sim: SimulatorState) -> None:
        super().__init__()
        self.generation = generation
        self.sim = sim

    async def produce(self, send: Send) -> None:
        outcome = "cancelled"  # unless proven otherwise: a cancelled task never gets further
        try:
            try:
                await self.sim.gate.acquire()
            except QueueFull as exc:
                outcome = "rejected"
                await send_json(send, 503, {"error": str(exc)})
                return
            try:
                outcome = await self._run(send)
            except Exception:
                outcome = "errored"
                raise
            finally:
                self.sim.gate.release()
        finally:
            self.sim.stats.record_outcome(outcome)

    async def _run(self, send: Send) -> str:
        gen = self.generation
        interval_ns = int(1e9 / gen.tokens_per_second)
        granted_ns = time.perf_counter_ns()
        await asyncio.sleep(gen.first_token_delay)
        first_ns = time.perf_counter_ns()

        pieces = gen.pieces
        if gen.fail_with is not None:
            pieces = pieces[:MIDSTREAM_TOKENS]
        writer = NDJSONWriter(send)
        spent = 0  # tokens generated so far, the current piece's included
        for piece in pieces:
            # Pace against the schedule, not the previous sleep, so overheads do not add up.
            spent += piece.cost
            delay = (first_ns + (spent - 1) * interval_ns - time.perf_counter_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            if gen.stream:
                await writer.line(gen.chunk([piece]))

        if gen.fail_with is not None:
            # Ollama keeps the 200 it already sent and ends the stream with an error object;
            # without a stream nothing was sent yet, so the error gets a real status.
            if gen.stream:
                await writer.line({"error": gen.fail_with}, last=True)
            else:
                await send_json(send, 500, {"error": gen.fail_with})
            return "errored"

        done_ns = time.perf_counter_ns()
        load = max(1, granted_ns - gen.received_ns)
        prompt_eval = max(1, first_ns - granted_ns - interval_ns)
        # The first token's own interval is part of evaluation, so N tokens take N intervals.
        evaluation = max(1, done_ns - first_ns + (interval_ns if pieces else 0))
        counters = {
            "total_duration": max(done_ns - gen.received_ns, load + prompt_eval + evaluation),
            "load_duration": load,
            "prompt_eval_count": gen.prompt_eval_count,
            "prompt_eval_duration": prompt_eval,
            "eval_count": spent,
            "eval_duration": evaluation,
        }
        if gen.stream:
            await writer.line(gen.final([], counters), last=True)
        else:
            await send_json(send, 200, gen.final(pieces, counters))
        return "completed"
