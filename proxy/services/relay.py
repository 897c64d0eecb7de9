"""One generation, relayed from Ollama piece by piece (`relay`) or as one answer (`complete`);
shared by every dialect and the WebSocket.

The proxy asks Ollama for what its own caller asked for. A stream is relayed as it arrives; its
time to first token is measured. A caller that wants one JSON object gets Ollama's one object
(`stream: false`): one body to parse instead of a chunk per token. Its time to first token is
then derived from the durations Ollama reports: the time the answer took, less the time Ollama
spent generating it (`eval_duration`), which is what a stream's first chunk would have waited
for. Either way, a caller that goes away cancels the generation upstream (closing the stream,
or the request, closes the upstream connection). What comes back is dialect-neutral (pieces of
text, thinking and tool calls, then a Completion with Ollama's final object): each dialect writes
it in its own shape.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from proxy.core.errors import UpstreamFailed
from proxy.core.tracing import end_generation, generation_span
from proxy.upstream.router import Engine

Kind = Literal["generate", "chat"]


@dataclass
class Piece:
    """One chunk of the answer, as Ollama streamed it: text, thinking or tool calls."""

    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # Ollama's object, as sent


@dataclass
class Completion:
    """What is known once the upstream stream has ended."""

    text: str
    done_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    total_ms: float
    first_token_ms: float | None
    tokens_per_second: float | None
    upstream_ms: float = 0.0
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)  # Ollama's final object, as sent

    @property
    def usage(self) -> dict[str, int]:
        """The answer's `Usage` (proxy/schemas.py), as its model dumps it: built once per
        answer, so without the model (tests/proxy/fast/test_hot_routes.py holds them together)."""
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    @property
    def timings(self) -> dict[str, float | None]:
        """The answer's `Timings` (proxy/schemas.py), as its model dumps it."""
        first, speed = self.first_token_ms, self.tokens_per_second
        return {"total_ms": round(self.total_ms, 3),
                "first_token_ms": None if first is None else round(first, 3),
                "tokens_per_second": None if speed is None else round(speed, 2)}

    def to_json(self) -> dict[str, Any]:
        """A plain-JSON copy, for the response cache."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        return cls(**data)


@dataclass
class UpstreamCall:
    """A generate or chat call as it will be sent to Ollama (`stream` is set when it is sent:
    whether the answer is relayed or completed)."""

    kind: Kind
    model: str
    payload: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)

    @property
    def path(self) -> str:
        return "/api/generate" if self.kind == "generate" else "/api/chat"

    def body(self, stream: bool) -> dict[str, Any]:
        return {**self.payload, "stream": stream}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _piece(kind: Kind, obj: dict[str, Any]) -> Piece:
    if kind == "generate":
        return Piece(_text(obj.get("response")), _text(obj.get("thinking")), [], obj)
    message = obj.get("message")
    if not isinstance(message, dict):
        return Piece(raw=obj)
    calls = message.get("tool_calls")
    return Piece(_text(message.get("content")), _text(message.get("thinking")),
                 [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else [],
                 obj)


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    return int(value) if isinstance(value, int | float) else 0


def _completion(call: UpstreamCall, final: dict[str, Any], pieces: list[Piece],
                first_token_at: float | None) -> Completion:
    """The Completion of a generation whose final object is `final`, after `pieces`; its time to
    first token measured (`first_token_at`) or, for an answer that came whole, derived."""
    ended = time.perf_counter()
    total_ms = (ended - call.started) * 1000
    eval_count = _int(final, "eval_count")
    eval_ns = _int(final, "eval_duration")
    if first_token_at is not None:
        first_token_ms: float | None = (first_token_at - call.started) * 1000
    elif pieces and eval_ns > 0:
        first_token_ms = max(0.0, total_ms - eval_ns / 1e6)
    else:
        first_token_ms = None
    reason = final.get("done_reason")
    return Completion(
        text="".join(p.content for p in pieces),
        done_reason=reason if isinstance(reason, str) else None,
        prompt_tokens=_int(final, "prompt_eval_count"),
        completion_tokens=eval_count,
        total_ms=total_ms,
        first_token_ms=first_token_ms,
        tokens_per_second=eval_count / eval_ns * 1e9 if eval_ns > 0 else None,
        upstream_ms=_int(final, "total_duration") / 1e6,
        thinking="".join(p.thinking for p in pieces),
        tool_calls=[call for p in pieces for call in p.tool_calls],
        final=final,
    )


def _carries(piece: Piece) -> bool:
    return bool(piece.content or piece.thinking or piece.tool_calls)


async def relay(upstream: Engine, call: UpstreamCall) -> AsyncIterator[Piece | Completion]:
    """Yield each piece that carries something (text, thinking, tool calls) as it arrives, then
    one Completion; what the final object itself carries is in the Completion only.

    Errors surface as the UpstreamError subclasses raised by the client. A stream that ends
    without Ollama's final `done` object is an UpstreamFailed: the answer would be truncated.

    The generation is one trace span (core/tracing.py), the engine's HTTP calls its children:
    the span is made current only while the engine is awaited, never across a `yield`, so that
    the consumer's own context is never changed under it. It ends when the final object has
    come, not when this generator is closed: a caller that stops at the Completion may never
    close it.
    """
    first_token_at: float | None = None
    pieces: list[Piece] = []
    with _traced(call) as span:
        # Tracing off, the span records nothing: making it current for each line would cost
        # every token a context switch for nothing.
        current = (functools.partial(trace.use_span, span, record_exception=False,
                                     set_status_on_exception=False)
                   if span.is_recording() else contextlib.nullcontext)
        async with aclosing(upstream.stream_lines(call.path, call.body(True),
                                                  model=call.model)) as objects:
            lines = aiter(objects)
            while True:
                with current():
                    try:
                        obj = await anext(lines)
                    except StopAsyncIteration:
                        break
                piece = _piece(call.kind, obj)
                done = obj.get("done") is True
                if _carries(piece):
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                    pieces.append(piece)
                    if not done:
                        yield piece
                if done:
                    completion = _completion(call, obj, pieces, first_token_at)
                    end_generation(span, obj, completion.first_token_ms)
                    yield completion
                    return
        raise UpstreamFailed("upstream stream ended before the final object")


async def complete(upstream: Engine, call: UpstreamCall) -> Completion:
    """Run a generation to its end, asking upstream for one answer, and return it (one trace
    span, as `relay`)."""
    with _traced(call) as span:
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            final = await upstream.complete(call.path, call.body(False), model=call.model)
        if final.get("done") is not True:
            raise UpstreamFailed("upstream answered without its final object")
        piece = _piece(call.kind, final)
        completion = _completion(call, final, [piece] if _carries(piece) else [], None)
        end_generation(span, final, completion.first_token_ms)
        return completion


@contextmanager
def _traced(call: UpstreamCall) -> Iterator[trace.Span]:
    """The generation's span (core/tracing.py): an exception is recorded on it, and it is ended
    on the way out unless the final object ended it already."""
    span = generation_span(call.kind, call.model)
    try:
        yield span
    except Exception as exc:
        span.record_exception(exc)
        span.set_status(StatusCode.ERROR, type(exc).__name__)
        raise
    finally:
        if span.is_recording():
            span.end()
