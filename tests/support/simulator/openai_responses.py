"""Ollama's /v1 layer, responses: native /api objects rewritten into OpenAI's shapes.

Ollama wraps its native handlers' response writer (`middleware/openai.go`): every object the
native handler writes — one per NDJSON line, or the single JSON reply — is decoded and
rewritten on the spot by `openai/openai.go`. Each translator here is that writer: `feed` takes
one native object and returns the bytes Ollama writes for it, key order and all.

- Chat streams: the role only in the first chunk; content chunks carry `content` (and
  `reasoning` for thinking, `tool_calls` with string `arguments`); the native final object adds
  no content chunk but a chunk of its own with `"delta": {}` and `finish_reason` (`tool_calls`
  when a tool call was sent and the reason was `stop`); with `stream_options.include_usage` a
  last chunk has `"choices": []` and `usage`; then `data: [DONE]`.
- Completion streams: one `text_completion` chunk per native object, `finish_reason` on the
  last; with `include_usage` every chunk carries a zero `usage`, and a last `"choices": []`
  chunk the real one.
- A native error line in the middle of a stream is decoded as an (empty) response, exactly as
  Ollama's writer does: the client gets one empty chunk and a stream that ends without
  `[DONE]`. A native error before any output becomes OpenAI's error object, its `type` chosen
  from the status (`invalid_request_error` 400, `not_found_error` 404, else `api_error`).
- Replies are written by Go's json.Encoder, so a single JSON body ends with a newline.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

from tests.support.simulator.catalog import name_parts
from tests.support.simulator.embeddings import float32_base64
from tests.support.simulator.streaming import go_json

FINGERPRINT = "fp_ollama"
_DONE = b"data: [DONE]\n\n"


def error_body(status: int, message: str) -> dict[str, Any]:
    """openai.NewError: the error object for a status."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def native_error_message(native: Any) -> str:
    """What api.StatusError.Error() says for a native error body."""
    message = native.get("error") if isinstance(native, dict) else None
    if isinstance(message, str) and message:
        return message
    return "something went wrong, please see the ollama server logs for details"


def encoded(payload: Any) -> bytes:
    return (go_json(payload) + "\n").encode()


def _sse(payload: Any) -> bytes:
    return f"data: {go_json(payload)}\n\n".encode()


def _unix(timestamp: Any) -> int:
    if not isinstance(timestamp, str) or not timestamp:
        return int(datetime.now().timestamp())
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())


def _usage(native: dict[str, Any]) -> dict[str, int]:
    prompt, completion = native.get("prompt_eval_count", 0), native.get("eval_count", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        calls.append(
            {
                "id": call.get("id", ""),
                "index": function.get("index", 0),
                "type": "function",
                "function": {
                    "name": function.get("name", ""),
                    "arguments": go_json(function.get("arguments") or {}),
                },
            }
        )
    return calls


class ChatTranslator:
    """ChatWriter: /api/chat objects to chat.completion(.chunk) objects."""

    def __init__(self, stream: bool, include_usage: bool) -> None:
        self.stream, self.include_usage = stream, include_usage
        self.id = f"chatcmpl-{random.randrange(999)}"
        self.created: int | None = None
        self.first_sent = self.tool_call_sent = False

    def _chunk(self, native: dict[str, Any], choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": native.get("model", ""),
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }

    def _deltas(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """ToStreamChunks: thinking and content of one object go out as two chunks."""
        role = {} if self.first_sent else {"role": "assistant"}
        content, reasoning = message.get("content", ""), message.get("thinking", "")
        calls = _tool_calls(message)
        if reasoning and (content or calls):
            return [{**role, "reasoning": reasoning}, {"content": content, "tool_calls": calls}]
        delta: dict[str, Any] = {**role, "content": content}
        if reasoning:
            delta["reasoning"] = reasoning
        if calls:
            delta["tool_calls"] = calls
        return [delta]

    def feed(self, native: dict[str, Any]) -> bytes:
        if not self.stream:
            return encoded(self.completion(native))
        if self.created is None:
            self.created = _unix(native.get("created_at"))
        message = native.get("message") or {}
        done = native.get("done") is True
        empty = not (message.get("content") or message.get("thinking") or message.get("tool_calls"))
        out = b""
        if not (done and self.first_sent and empty):
            for delta in self._deltas(message):
                delta = {k: v for k, v in delta.items() if v or k == "content"}
                self.tool_call_sent = self.tool_call_sent or bool(delta.get("tool_calls"))
                choice = {"index": 0, "delta": delta, "finish_reason": None}
                out += _sse(self._chunk(native, [choice]))
            self.first_sent = True
        if done:
            reason = native.get("done_reason") or "stop"
            if reason == "stop" and self.tool_call_sent:
                reason = "tool_calls"
            out += _sse(self._chunk(native, [{"index": 0, "delta": {}, "finish_reason": reason}]))
            if self.include_usage:
                out += _sse({**self._chunk(native, []), "usage": _usage(native)})
            out += _DONE
        return out

    def completion(self, native: dict[str, Any]) -> dict[str, Any]:
        """ToChatCompletion: the whole reply as one chat.completion object."""
        message = native.get("message") or {}
        calls = _tool_calls(message)
        reply: dict[str, Any] = {
            "role": message.get("role", ""),
            "content": message.get("content", ""),
        }
        if message.get("thinking"):
            reply["reasoning"] = message["thinking"]
        if calls:
            reply["tool_calls"] = calls
        reason = native.get("done_reason") or None
        if reason == "stop" and calls:
            reason = "tool_calls"
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": _unix(native.get("created_at")),
            "model": native.get("model", ""),
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "message": reply, "finish_reason": reason}],
            "usage": _usage(native),
        }


class CompletionTranslator:
    """CompleteWriter: /api/generate objects to text_completion objects."""

    def __init__(self, stream: bool, include_usage: bool) -> None:
        self.stream, self.include_usage = stream, include_usage
        self.id = f"cmpl-{random.randrange(999)}"

    def _object(self, native: dict[str, Any], created: int) -> dict[str, Any]:
        choice = {
            "text": native.get("response", ""),
            "index": 0,
            "finish_reason": native.get("done_reason") or None,
        }
        return {
            "id": self.id,
            "object": "text_completion",
            "created": created,
            "model": native.get("model", ""),
            "system_fingerprint": FINGERPRINT,
            "choices": [choice],
        }

    def feed(self, native: dict[str, Any]) -> bytes:
        if not self.stream:
            whole = self._object(native, _unix(native.get("created_at")))
            return encoded({**whole, "usage": _usage(native)})
        # ToCompleteChunk stamps each chunk with the time it is written; field order differs
        # from the non-streaming object (choices before model), as in openai.go.
        chunk = self._object(native, int(datetime.now().timestamp()))
        chunk = {k: chunk[k] for k in ("id", "object", "created", "choices", "model",
                                        "system_fingerprint")}
        if self.include_usage:
            chunk["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        out = _sse(chunk)
        if native.get("done") is True:
            if self.include_usage:
                out += _sse({**chunk, "choices": [], "usage": _usage(native)})
            out += _DONE
        return out


class EmbeddingTranslator:
    """EmbedWriter: the /api/embed reply as an embedding list (float or base64)."""

    def __init__(self, model: str, encoding: str) -> None:
        self.model, self.base64 = model, encoding.lower() == "base64"

    def feed(self, native: dict[str, Any]) -> bytes:
        vectors = native.get("embeddings")
        if vectors is None:
            empty = {"object": "", "data": None, "model": "", "usage": _embed_usage(0)}
            return encoded(empty)
        data = [
            {
                "object": "embedding",
                "embedding": float32_base64(vector) if self.base64 else vector,
                "index": index,
            }
            for index, vector in enumerate(vectors)
        ]
        usage = _embed_usage(native.get("prompt_eval_count", 0))
        listed = {"object": "list", "data": data or None, "model": self.model, "usage": usage}
        return encoded(listed)


def _embed_usage(count: int) -> dict[str, int]:
    return {"prompt_tokens": count, "total_tokens": count}


def _model(name: str, modified_at: Any) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": _unix(modified_at),
        "owned_by": name_parts(name)[1],
    }


class ListTranslator:
    """ListWriter: /api/tags as a model list (`data` is null when there are no models)."""

    def feed(self, native: dict[str, Any]) -> bytes:
        models = [_model(m.get("model") or m["name"], m["modified_at"]) for m in native["models"]]
        return encoded({"object": "list", "data": models or None})


class RetrieveTranslator:
    """RetrieveWriter: /api/show as one model, named as the request's path named it."""

    def __init__(self, model: str) -> None:
        self.model = model

    def feed(self, native: dict[str, Any]) -> bytes:
        return encoded(_model(self.model, native.get("modified_at")))
