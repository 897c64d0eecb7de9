"""One generation, relayed from Ollama piece by piece; shared by every dialect and the WebSocket.

The proxy always asks Ollama for a stream, even when its own caller wants one JSON object: the
proxy then measures time to first token the same way for both, and can cancel the upstream
generation the moment its caller goes away (closing the stream closes the upstream connection).
What comes back is dialect-neutral (pieces of text, thinking and tool calls, then a Completion
with Ollama's final object): each dialect writes it in its own shape.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from proxy.core.errors import UpstreamFailed
from proxy.core.tracing import end_generation, generation_span
from proxy.schemas import Timings, Usage
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
    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )

    @property
    def timings(self) -> Timings:
        return Timings(
            total_ms=round(self.total_ms, 3),
            first_token_ms=None if self.first_token_ms is None else round(self.first_token_ms, 3),
            tokens_per_second=(
                None if self.tokens_per_second is None else round(self.tokens_per_second, 2)
            ),
        )

    def to_json(self) -> dict[str, Any]:
        """A plain-JSON copy, for the response cache."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        return cls(**data)


@dataclass
class UpstreamCall:
    """A generate or chat call as it will be sent to Ollama."""

    kind: Kind
    model: str
    payload: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)

    @property
    def path(self) -> str:
        return "/api/generate" if self.kind == "generate" else "/api/chat"


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


async def relay(upstream: Engine, call: UpstreamCall) -> AsyncIterator[Piece | Completion]:
    """Yield each piece that carries something (text, thinking, tool calls) as it arrives, then
    one Completion; what the final object itself carries is in the Completion only.

    Errors surface as the UpstreamError subclasses raised by the client. A stream that ends
    without Ollama's final `done` object is an UpstreamFailed: the answer would be truncated.

    The generation is one trace span (core/tracing.py), the engine's HTTP calls its children:
    the span is made current only while the engine is awaited, never across a `yield`, so that
    the consumer's own context is never changed under it. It ends when the final object has
    come, not when this generator is closed: a caller that stops at the Completion
    (`collect`) may never close it.
    """
    span = generation_span(call.kind, call.model)
    lines = aiter(upstream.stream_lines(call.path, call.payload, model=call.model))
    first_token_at: float | None = None
    parts: list[str] = []
    thoughts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    try:
        while True:
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                try:
                    obj = await anext(lines)
                except StopAsyncIteration:
                    break
            piece = _piece(call.kind, obj)
            done = obj.get("done") is True
            if piece.content or piece.thinking or piece.tool_calls:
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                parts.append(piece.content)
                thoughts.append(piece.thinking)
                tool_calls.extend(piece.tool_calls)
                if not done:
                    yield piece
            if done:
                ended = time.perf_counter()
                eval_count = _int(obj, "eval_count")
                eval_ns = _int(obj, "eval_duration")
                reason = obj.get("done_reason")
                first_token_ms = (
                    None if first_token_at is None else (first_token_at - call.started) * 1000)
                end_generation(span, obj, first_token_ms)
                yield Completion(
                    text="".join(parts),
                    done_reason=reason if isinstance(reason, str) else None,
                    prompt_tokens=_int(obj, "prompt_eval_count"),
                    completion_tokens=eval_count,
                    total_ms=(ended - call.started) * 1000,
                    first_token_ms=first_token_ms,
                    tokens_per_second=eval_count / eval_ns * 1e9 if eval_ns > 0 else None,
                    upstream_ms=_int(obj, "total_duration") / 1e6,
                    thinking="".join(thoughts),
                    tool_calls=tool_calls,
                    final=obj,
                )
                return
        raise UpstreamFailed("upstream stream ended before the final object")
    except Exception as exc:
        span.record_exception(exc)
        span.set_status(StatusCode.ERROR, type(exc).__name__)
        raise
    finally:
        # Ended at the final object already, unless the generation ended otherwise.
        if span.is_recording():
            span.end()
