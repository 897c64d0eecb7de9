"""Ollama's /v1 layer, requests: OpenAI bodies rewritten into native /api bodies.

Pure functions, one per route, following `openai/openai.go` (FromChatRequest,
FromCompleteRequest) and the checks of `middleware/openai.go` (ChatMiddleware,
CompletionsMiddleware, EmbeddingsMiddleware). Each raises `ApiError(400, ...)` with the text
Ollama's middleware answers; the route wraps it in OpenAI's error shape.

Where Ollama's code and the OpenAI API differ, the code wins: `max_completion_tokens` is not
read (Ollama's ChatCompletionRequest has only `max_tokens`, so the newer field is ignored like
any unknown one), temperature and top_p default to 1.0 rather than the model's defaults, and a
`/v1/completions` `prompt` must be one string.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from tests.support.simulator.payload import ApiError, Fields

# What Go's %T prints for a decoded JSON value of each Python type.
_GO_KINDS = {
    type(None): "<nil>",
    bool: "bool",
    float: "float64",
    int: "float64",
    dict: "map[string]interface {}",
}
_IMAGE_PREFIXES = tuple(f"data:image/{kind};base64," for kind in ("jpeg", "jpg", "png", "webp"))


def _optional_number(fields: Fields, name: str, go_type: str, *, integer: bool) -> Any:
    value = fields.raw(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fields.wrong(name, value, go_type)
    if integer and isinstance(value, float):
        raise ApiError(
            400,
            f"json: cannot unmarshal number {value} into Go struct field "
            f"{fields.struct}.{name} of type {go_type}",
        )
    return value


def _stream_options(fields: Fields) -> tuple[bool, bool]:
    stream = fields.flag("stream") is True
    options = fields.mapping("stream_options")
    include_usage = Fields(options, f"{fields.struct}.stream_options").flag("include_usage")
    return stream, include_usage is True


def _tool_calls(calls: list[Any]) -> list[dict[str, Any]]:
    converted = []
    for call in calls:
        call = call if isinstance(call, dict) else {}
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        assert isinstance(function, dict)
        try:
            arguments = json.loads(function.get("arguments") or "")
        except (TypeError, ValueError):
            arguments = None
        if not isinstance(arguments, dict):
            raise ApiError(400, "invalid tool call arguments")
        name = function.get("name") or ""
        entry: dict[str, Any] = {"function": {"index": 0, "name": name, "arguments": arguments}}
        if call.get("id"):
            entry = {"id": call["id"], **entry}
        converted.append(entry)
    return converted


def _image(url: Any) -> str:
    if not isinstance(url, str):
        raise ApiError(400, "invalid message format")
    if url.startswith(("http://", "https://")):
        raise ApiError(
            400,
            "image URLs are not currently supported, please use base64 encoded data instead",
        )
    prefix = next((p for p in ("data:;base64,", *_IMAGE_PREFIXES) if url.startswith(p)), None)
    if prefix is None:
        raise ApiError(400, "invalid image input")
    try:
        data = base64.b64decode(url[len(prefix) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "invalid image input") from exc
    return base64.b64encode(data).decode()


def _tool_name(messages: list[Any], message: dict[str, Any]) -> str:
    if str(message.get("role", "")).lower() != "tool":
        return ""
    name = message.get("name") or ""
    call_id = message.get("tool_call_id")
    if not name and call_id:
        for earlier in reversed(messages):  # the last call with that id wins, as in Ollama
            for call in (earlier.get("tool_calls") or []) if isinstance(earlier, dict) else []:
                if isinstance(call, dict) and call.get("id") == call_id:
                    function = call.get("function")
                    return str(function.get("name", "")) if isinstance(function, dict) else ""
    return str(name)


def _messages(fields: Fields) -> list[dict[str, Any]]:
    raw = fields.items("messages", "[]openai.Message")
    native: list[dict[str, Any]] = []
    for message in raw:
        if not isinstance(message, dict):
            raise fields.wrong("messages", message, "openai.Message")
        inner = Fields(message, f"{fields.struct}.messages")
        role = inner.string("role")
        reasoning = inner.string("reasoning")
        call_id = inner.string("tool_call_id")
        calls = inner.items("tool_calls", "[]openai.ToolCall")
        tool_name = _tool_name(raw, message)
        content = message.get("content")
        extra = {"thinking": reasoning, "tool_call_id": call_id}
        if isinstance(content, str):
            native.append(
                {
                    "role": role,
                    "content": content,
                    **extra,
                    "tool_calls": _tool_calls(calls),
                    "tool_name": tool_name,
                }
            )
        elif isinstance(content, list):
            for part in content:
                native.append(_content_part(role, part))
            if native and calls:
                native[-1].update(extra, tool_calls=_tool_calls(calls), tool_name=tool_name)
        elif "tool_calls" in message and isinstance(message["tool_calls"], list):
            native.append({"role": role, "content": "", **extra, "tool_calls": _tool_calls(calls)})
        else:
            kind = _GO_KINDS.get(type(content), "string")
            raise ApiError(400, f"invalid message content type: {kind}")
    return [{k: v for k, v in m.items() if v or k in ("role", "content")} for m in native]


def _content_part(role: str, part: Any) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise ApiError(400, "invalid message format")
    if part.get("type") == "text":
        if not isinstance(part.get("text"), str):
            raise ApiError(400, "invalid message format")
        return {"role": role, "content": part["text"]}
    if part.get("type") == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        return {"role": role, "content": "", "images": [_image(url)]}
    if part.get("type") == "input_audio":
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, dict) else None
        if not isinstance(audio, dict):
            raise ApiError(400, "invalid input_audio format")
        if not isinstance(data, str):
            raise ApiError(400, "invalid input_audio format: missing data")
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ApiError(400, f"invalid input_audio base64 data: {exc}") from exc
        return {"role": role, "content": "", "images": [base64.b64encode(decoded).decode()]}
    raise ApiError(400, "invalid message format")


def _options(fields: Fields, *, completion: bool) -> dict[str, Any]:
    options: dict[str, Any] = {}
    stop = fields.raw("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        if completion:
            for item in stop:
                if not isinstance(item, str):
                    kind = _GO_KINDS.get(type(item), "string")
                    raise ApiError(400, f"invalid type for 'stop' field: {kind}")
        options["stop"] = [s for s in stop if isinstance(s, str)]
    max_tokens = _optional_number(fields, "max_tokens", "int", integer=True)
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    temperature = _optional_number(fields, "temperature", "float64", integer=False)
    options["temperature"] = 1.0 if temperature is None else temperature
    seed = _optional_number(fields, "seed", "int", integer=True)
    if seed is not None:
        options["seed"] = seed
    for name in ("frequency_penalty", "presence_penalty"):
        value = _optional_number(fields, name, "float64", integer=False)
        if value is not None or completion:  # /v1/completions always sends them (0 by default)
            options[name] = value or 0
    top_p = _optional_number(fields, "top_p", "float64", integer=False)
    options["top_p"] = top_p if top_p else 1.0
    return options


# thinkFromReasoningEffort: OpenAI's efforts clamped onto Ollama's think levels.
_EFFORTS: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}


def _think(fields: Fields) -> bool | str | None:
    reasoning = fields.mapping("reasoning")
    effort = reasoning.get("effort") if reasoning else fields.raw("reasoning_effort")
    if not effort:
        return None
    if effort not in _EFFORTS:
        raise ApiError(
            400,
            f'invalid reasoning value: "{effort}" (must be "minimal", "low", "medium", "high", '
            '"xhigh", "ultra", "max", or "none")',
        )
    return _EFFORTS[effort]


def chat_request(body: dict[str, Any]) -> tuple[dict[str, Any], bool, bool]:
    """A /v1/chat/completions body as the /api/chat body Ollama's middleware builds, with
    `stream` and `stream_options.include_usage`."""
    fields = Fields(body, "ChatCompletionRequest")
    model = fields.string("model")
    stream, include_usage = _stream_options(fields)
    if not fields.items("messages", "[]openai.Message"):
        raise ApiError(400, "[] is too short - 'messages'")
    native: dict[str, Any] = {"model": model, "messages": _messages(fields)}
    response_format = fields.mapping("response_format")
    kind = str(response_format.get("type") or "").strip().lower()
    if kind == "json_object":
        native["format"] = "json"
    elif kind == "json_schema" and isinstance(response_format.get("json_schema"), dict):
        schema = response_format["json_schema"].get("schema")
        if schema is not None:
            native["format"] = schema
    native["options"] = _options(fields, completion=False)
    native["stream"] = stream
    tools = fields.items("tools", "[]api.Tool")
    if tools:
        native["tools"] = tools
    think = _think(fields)
    if think is not None:
        native["think"] = think
    return native, stream, include_usage


def completion_request(body: dict[str, Any]) -> tuple[dict[str, Any], bool, bool]:
    """A /v1/completions body as the /api/generate body, with the stream settings."""
    fields = Fields(body, "CompletionRequest")
    stream, include_usage = _stream_options(fields)
    native = {
        "model": fields.string("model"),
        "prompt": fields.string("prompt"),
        "suffix": fields.string("suffix"),
        "stream": stream,
        "options": _options(fields, completion=True),
    }
    return native, stream, include_usage


def embeddings_request(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A /v1/embeddings body as the /api/embed body, with the `encoding_format` asked for."""
    fields = Fields(body, "EmbedRequest")
    encoding = fields.string("encoding_format")
    dimensions = _optional_number(fields, "dimensions", "int", integer=True)
    if encoding and encoding.lower() not in ("float", "base64"):
        raise ApiError(
            400,
            f"Invalid value for 'encoding_format' = {encoding}. "
            "Supported values: ['float', 'base64'].",
        )
    value = fields.raw("input")
    if value == "":
        value = [""]
    if value is None or value == []:
        raise ApiError(400, "invalid input")
    native: dict[str, Any] = {"model": fields.string("model"), "input": value}
    if dimensions:
        native["dimensions"] = dimensions
    return native, encoding
