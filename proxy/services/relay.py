"""One generation, relayed from Ollama piece by piece; shared by the HTTP and WebSocket routes.

The proxy always asks Ollama for a stream, even when its own caller wants one JSON object: the
proxy then measures time to first token the same way for both, and can cancel the upstream
generation the moment its caller goes away (closing the stream closes the upstream connection).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from proxy.core.errors import UpstreamFailed
from proxy.schemas import ChatMessage, GenerationOptions, Timings, Usage
from proxy.upstream.ollama import OllamaClient

Kind = Literal["generate", "chat"]


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


def options_payload(options: GenerationOptions | None) -> dict[str, Any] | None:
    if options is None:
        return None
    values = options.model_dump(exclude_none=True)
    return values or None


def generate_call(
    model: str, prompt: str, system: str | None, options: GenerationOptions | None
) -> UpstreamCall:
    payload: dict[str, Any] = {"model": model, "prompt": prompt, "stream": True}
    if system is not None:
        payload["system"] = system
    if (opts := options_payload(options)) is not None:
        payload["options"] = opts
    return UpstreamCall("generate", model, payload)


def chat_call(
    model: str, messages: list[ChatMessage], options: GenerationOptions | None
) -> UpstreamCall:
    payload: dict[str, Any] = {
        "model": model,
        "messages": [m.model_dump() for m in messages],
        "stream": True,
    }
    if (opts := options_payload(options)) is not None:
        payload["options"] = opts
    return UpstreamCall("chat", model, payload)


def _piece(kind: Kind, obj: dict[str, Any]) -> str:
    if kind == "generate":
        value = obj.get("response", "")
    else:
        message = obj.get("message") or {}
        value = message.get("content", "") if isinstance(message, dict) else ""
    return value if isinstance(value, str) else ""


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    return int(value) if isinstance(value, int | float) else 0


async def relay(upstream: OllamaClient, call: UpstreamCall) -> AsyncIterator[str | Completion]:
    """Yield each non-empty text piece as it arrives, then one Completion.

    Errors surface as the UpstreamError subclasses raised by the client. A stream that ends
    without Ollama's final `done` object is an UpstreamFailed: the answer would be truncated.
    """
    first_token_at: float | None = None
    parts: list[str] = []
    async for obj in upstream.stream_lines(call.path, call.payload, model=call.model):
        piece = _piece(call.kind, obj)
        if piece:
            if first_token_at is None:
                first_token_at = time.perf_counter()
            parts.append(piece)
            yield piece
        if obj.get("done") is True:
            ended = time.perf_counter()
            eval_count = _int(obj, "eval_count")
            eval_ns = _int(obj, "eval_duration")
            yield Completion(
                text="".join(parts),
                done_reason=obj.get("done_reason") if isinstance(obj.get("done_reason"), str)
                else None,
                prompt_tokens=_int(obj, "prompt_eval_count"),
                completion_tokens=eval_count,
                total_ms=(ended - call.started) * 1000,
                first_token_ms=(
                    None if first_token_at is None else (first_token_at - call.started) * 1000
                ),
                tokens_per_second=eval_count / eval_ns * 1e9 if eval_ns > 0 else None,
                upstream_ms=_int(obj, "total_duration") / 1e6,
            )
            return
    raise UpstreamFailed("upstream stream ended before the final object")


async def collect(upstream: OllamaClient, call: UpstreamCall) -> Completion:
    """Run a generation to its end and return the whole answer."""
    async for item in relay(upstream, call):
        if isinstance(item, Completion):
            return item
    raise UpstreamFailed("upstream stream ended before the final object")
