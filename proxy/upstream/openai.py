"""An OpenAI-compatible engine (llama.cpp's `llama-server`, vLLM, …) behind the same interface
as the Ollama client: the proxy speaks Ollama's native API to every engine, and this adapter
translates it both ways.

    POST /api/chat      → POST /v1/chat/completions (stream, usage included), chunks back as
                          Ollama's chat objects; the end as Ollama's final object, its counters
                          from the engine's `usage` and the measured times
    POST /api/generate  → POST /v1/completions
    POST /api/embed     → POST /v1/embeddings
    GET  /api/tags      → GET  /v1/models
    POST /api/show      → the model's entry in /v1/models (an engine like this reports no more)
    GET  /api/ps        → nothing loaded that the engine would tell

So an engine of this kind serves every client dialect (the web page, `/api/llm/*`, `/ollama`,
`/v1`) with the same validation, limits, audit and metrics as Ollama does.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import httpx

from proxy.core.errors import ModelNotFound, UpstreamFailed
from proxy.core.settings import Settings
from proxy.upstream.http import (
    RelayClient,
    StreamTimer,
    engine_client,
    json_request,
    read_to_end,
    streamed_lines,
    whole_answer,
)

# Ollama's done reasons from OpenAI's finish reasons (a tool call is a normal stop in Ollama).
DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop",
                "function_call": "stop", "content_filter": "stop"}
OPTION_NAMES = {"num_predict": "max_tokens", "temperature": "temperature", "top_p": "top_p",
                "seed": "seed", "stop": "stop", "presence_penalty": "presence_penalty",
                "frequency_penalty": "frequency_penalty", "top_k": "top_k", "min_p": "min_p",
                "repeat_penalty": "repeat_penalty"}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def openai_body(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """An Ollama generate/chat payload as an OpenAI (chat) completion request, streamed (with
    the usage at the end) or not, as the payload's `stream` says."""
    stream = payload.get("stream") is not False
    body: dict[str, Any] = {"model": payload["model"], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    for name, value in (payload.get("options") or {}).items():
        if name in OPTION_NAMES:
            body[OPTION_NAMES[name]] = value
    fmt = payload.get("format")
    if path == "/api/chat":
        body["messages"] = [_openai_message(m) for m in payload.get("messages", [])]
        if payload.get("tools"):
            body["tools"] = payload["tools"]
        if fmt == "json":
            body["response_format"] = {"type": "json_object"}
        elif isinstance(fmt, dict):
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": fmt}}
    else:
        prompt = payload.get("prompt", "")
        if payload.get("system"):
            prompt = f"{payload['system']}\n\n{prompt}"
        body["prompt"] = prompt
        if payload.get("suffix"):
            body["suffix"] = payload["suffix"]
    return body


def _openai_message(message: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.get("role", "user"),
                           "content": message.get("content", "")}
    images = message.get("images") or []
    if images:
        out["content"] = [{"type": "text", "text": out["content"]}, *(
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}
            for image in images)]
    calls = message.get("tool_calls") or []
    if calls:
        out["tool_calls"] = [
            {"id": call.get("id") or f"call_{index}", "type": "function",
             "function": {"name": call["function"]["name"],
                          "arguments": json.dumps(call["function"].get("arguments") or {})}}
            for index, call in enumerate(calls)]
    if message.get("role") == "tool" and message.get("tool_name"):
        out["name"] = message["tool_name"]
    return out


def _native_tool_calls(calls: list[dict[str, Any]], pending: dict[int, dict[str, Any]]) -> None:
    """Accumulate OpenAI's streamed tool-call fragments (by index) into whole calls."""
    for fragment in calls:
        index = fragment.get("index", len(pending))
        call = pending.setdefault(index, {"id": None, "name": "", "arguments": ""})
        call["id"] = fragment.get("id") or call["id"]
        function = fragment.get("function") or {}
        call["name"] += function.get("name") or ""
        call["arguments"] += function.get("arguments") or ""


def _ollama_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whole OpenAI tool calls (`id`, `name`, `arguments` as JSON text) in Ollama's shape."""
    return [{**({"id": c["id"]} if c["id"] else {}),
             "function": {"index": i, "name": c["name"],
                          "arguments": json.loads(c["arguments"] or "{}")}}
            for i, c in enumerate(calls)]


class OpenAIEngine:
    """An OpenAI-compatible server, answering in Ollama's native shapes."""

    kind = "openai"

    def __init__(self, settings: Settings, base_url: str, api_key: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._settings = settings
        self._http = engine_client(settings, self.base_url, headers, transport)
        self._relay = RelayClient(settings, self.base_url, headers)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._relay.aclose()

    async def _json(self, method: str, path: str, body: dict[str, Any] | None,
                    model: str | None) -> Any:
        return await json_request(self._http, method, path, body, model)

    async def tags(self) -> list[dict[str, Any]]:
        data = await self._json("GET", "/models", None, None)
        entries = data.get("data", []) if isinstance(data, dict) else []
        return [{"name": str(m["id"]), "model": str(m["id"]), "modified_at": datetime.fromtimestamp(
                    int(m.get("created") or 0), UTC).isoformat().replace("+00:00", "Z"),
                 "details": {"format": "gguf", "family": "", "parameter_size": "",
                             "quantization_level": ""}}
                for m in entries if isinstance(m, dict) and m.get("id")]

    async def version(self) -> str:
        return "openai-compatible"

    async def request_json(self, method: str, path: str, payload: dict[str, Any] | None = None,
                           model: str | None = None) -> Any:
        if path == "/api/tags":
            return {"models": await self.tags()}
        if path == "/api/ps":
            return {"models": []}
        if path == "/api/version":
            return {"version": await self.version()}
        if path == "/api/show" and payload is not None:
            name = str(payload.get("model", ""))
            if name not in {m["name"] for m in await self.tags()}:
                raise ModelNotFound(name)
            return {"details": {}, "model_info": {}, "capabilities": ["completion"]}
        if path == "/api/embed" and payload is not None:
            inputs = payload.get("input")
            started = time.perf_counter_ns()
            data = await self._json("POST", "/embeddings", {
                "model": payload["model"], "input": inputs, "encoding_format": "float",
                **({"dimensions": payload["dimensions"]} if payload.get("dimensions") else {}),
            }, model)
            rows = sorted(data.get("data", []), key=lambda d: d.get("index", 0))
            usage = data.get("usage") or {}
            return {"model": payload["model"], "embeddings": [r["embedding"] for r in rows],
                    "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
                    "total_duration": time.perf_counter_ns() - started}
        raise UpstreamFailed(f"{path} is not available on an OpenAI-compatible engine")

    async def stream_lines(self, path: str, payload: dict[str, Any], model: str | None
                           ) -> AsyncGenerator[dict[str, Any]]:
        """Ollama's stream objects, made from the engine's server-sent events; the first
        token within OLLAMA_FIRST_TOKEN_TIMEOUT, then at most OLLAMA_READ_TIMEOUT between two
        lines (UpstreamTimeout)."""
        chat = path == "/api/chat"
        endpoint = "/chat/completions" if chat else "/completions"
        started = time.perf_counter_ns()
        first_ns: int | None = None
        reason: str | None = None
        usage: dict[str, Any] = {}
        pending: dict[int, dict[str, Any]] = {}
        timer = StreamTimer(self._settings)
        async with aclosing(streamed_lines(self._relay, endpoint, openai_body(path, payload),
                                           model, timer)) as lines:
            async for line in lines:
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    await read_to_end(lines)
                    break
                try:
                    event = json.loads(data)
                except ValueError as exc:
                    raise UpstreamFailed("upstream sent an event that is not JSON") from exc
                if "error" in event:
                    raise UpstreamFailed(f"upstream failed mid-stream: {event['error']}")
                usage = event.get("usage") or usage
                for choice in event.get("choices") or []:
                    reason = choice.get("finish_reason") or reason
                    text = (choice.get("delta") or {}).get("content") if chat \
                        else choice.get("text")
                    thinking = (choice.get("delta") or {}).get("reasoning_content") \
                        or (choice.get("delta") or {}).get("reasoning") if chat else None
                    if chat:
                        _native_tool_calls((choice.get("delta") or {}).get("tool_calls")
                                           or [], pending)
                    if text or thinking:
                        first_ns = first_ns or time.perf_counter_ns()
                        timer.started()
                        yield self._chunk(payload["model"], chat, text or "", thinking or "")
            else:
                raise UpstreamFailed("upstream stream ended before [DONE]")
        if pending:
            calls = _ollama_tool_calls([pending[i] for i in sorted(pending)])
            yield {"model": payload["model"], "created_at": _now(),
                   "message": {"role": "assistant", "content": "", "tool_calls": calls},
                   "done": False}
        ended = time.perf_counter_ns()
        final = self._chunk(payload["model"], chat, "", "")
        final.update(done=True, done_reason=DONE_REASONS.get(reason or "stop", reason),
                     total_duration=ended - started,
                     prompt_eval_count=int(usage.get("prompt_tokens") or 0),
                     eval_count=int(usage.get("completion_tokens") or 0),
                     eval_duration=ended - (first_ns or started))
        yield final

    async def complete(self, path: str, payload: dict[str, Any], model: str | None
                       ) -> dict[str, Any]:
        """A generation answered in one body, as Ollama's final object. Its durations come from
        llama.cpp's `timings` (prompt and generation milliseconds) when the engine reports them;
        an engine that does not (vLLM) leaves `eval_duration` out, so the answer's time to first
        token and tokens per second are unknown rather than made up."""
        chat = path == "/api/chat"
        started = time.perf_counter_ns()
        answer = await whole_answer(self._relay, self._settings,
                                    "/chat/completions" if chat else "/completions",
                                    openai_body(path, payload), model)
        if not isinstance(answer, dict):
            raise UpstreamFailed("upstream answered with something other than a JSON object")
        choice = (answer.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        final = self._chunk(payload["model"], chat,
                            (message.get("content") if chat else choice.get("text")) or "",
                            (message.get("reasoning_content") or message.get("reasoning") or "")
                            if chat else "")
        if chat and message.get("tool_calls"):
            final["message"]["tool_calls"] = _ollama_tool_calls(
                [{"id": c.get("id"), "name": c["function"]["name"],
                  "arguments": c["function"].get("arguments") or ""}
                 for c in message["tool_calls"]])
        usage = answer.get("usage") or {}
        timings = answer.get("timings") or {}
        reason = choice.get("finish_reason")
        final.update(done=True, done_reason=DONE_REASONS.get(reason or "stop", reason),
                     total_duration=time.perf_counter_ns() - started,
                     prompt_eval_count=int(usage.get("prompt_tokens") or 0),
                     eval_count=int(usage.get("completion_tokens") or 0))
        if isinstance(timings.get("predicted_ms"), int | float):
            final["eval_duration"] = int(timings["predicted_ms"] * 1e6)
        if isinstance(timings.get("prompt_ms"), int | float):
            final["prompt_eval_duration"] = int(timings["prompt_ms"] * 1e6)
        return final

    @staticmethod
    def _chunk(model: str, chat: bool, text: str, thinking: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "created_at": _now()}
        if chat:
            body["message"] = {"role": "assistant", "content": text,
                               **({"thinking": thinking} if thinking else {})}
        else:
            body["response"] = text
        body["done"] = False
        return body
