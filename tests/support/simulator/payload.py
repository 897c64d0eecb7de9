"""Reading Ollama request bodies the way Ollama's Go server does, down to its error texts.

Ollama binds JSON into Go structs, so its 400s carry Go's messages: `missing request body` for an
empty body, `unexpected EOF` / `invalid character 'x' looking for beginning of value` for broken
JSON, `json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string`
for a wrong type. A proxy that passes upstream errors through should see the same texts here.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.requests import Request

from tests.support.simulator.state import SimulatorState


class ApiError(Exception):
    """An error Ollama reports before any output: a status and `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_GO_TYPES: dict[type, str] = {str: "string", bool: "bool", list: "array", dict: "object"}

_DECODER_CONTEXT = (
    ("Expecting value", "looking for beginning of value"),
    ("Expecting property name", "looking for beginning of object key string"),
    ("Expecting ':'", "after object key"),
    ("Expecting ','", "after object key:value pair"),
    ("Extra data", "after top-level value"),
    ("Invalid control character", "in string literal"),
)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return _GO_TYPES.get(type(value), "value")


def go_decoder_message(error: json.JSONDecodeError) -> str:
    """Translate Python's JSON error into what Go's encoding/json says for the same input."""
    remaining = error.doc[error.pos :]
    if not remaining.strip() or error.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    for prefix, context in _DECODER_CONTEXT:
        if error.msg.startswith(prefix):
            return f"invalid character {remaining[0]!r} {context}"
    return error.msg


TRANSLATED = "tests.support.simulator.translated"
"""Scope key marking a request rewritten by the /v1 layer: its body is not the client's, so it
is not recorded (the client's own body already was, under the same path)."""


async def read_body(
    request: Request,
    sim: SimulatorState,
    struct: str,
    *,
    package: str = "api",
    empty: str = "missing request body",
) -> dict[str, Any]:
    """Parse the JSON object body, recording it for `/__sim__/stats` whatever its shape.

    `empty` is the error for an empty body: Ollama's handlers say `missing request body`, its
    /v1 middleware passes Go's bare `EOF` on.
    """
    raw = await request.body()
    text = raw.decode("utf-8", errors="replace")
    record = not request.scope.get(TRANSLATED)
    try:
        data = json.loads(text) if text.strip() else None
    except json.JSONDecodeError as exc:
        if record:
            sim.stats.last_body[request.url.path] = text
        raise ApiError(400, go_decoder_message(exc)) from exc
    if record:
        sim.stats.last_body[request.url.path] = data if data is not None else text
    if not text.strip():
        raise ApiError(400, empty)
    if not isinstance(data, dict):
        raise ApiError(
            400,
            f"json: cannot unmarshal {_json_kind(data)} into Go value of type {package}.{struct}",
        )
    return data


class Fields:
    """Typed access to a request object; a wrong type is Go's unmarshal error (400)."""

    def __init__(self, data: dict[str, Any], struct: str) -> None:
        self._data = data
        self._struct = struct

    @property
    def struct(self) -> str:
        """The Go struct name errors mention (`GenerateRequest`, `ChatRequest.messages`)."""
        return self._struct

    def wrong(self, name: str, value: Any, go_type: str) -> ApiError:
        """Go's unmarshal error for field `name` holding `value` instead of a `go_type`."""
        return ApiError(
            400,
            f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
            f"{self._struct}.{name} of type {go_type}",
        )

    def string(self, name: str) -> str:
        value = self._data.get(name)
        if value is None:  # Go leaves the zero value for null
            return ""
        if not isinstance(value, str):
            raise self.wrong(name, value, "string")
        return value

    def flag(self, name: str) -> bool | None:
        value = self._data.get(name)
        if value is not None and not isinstance(value, bool):
            raise self.wrong(name, value, "bool")
        return value

    def mapping(self, name: str) -> dict[str, Any]:
        value = self._data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.wrong(name, value, "map[string]interface {}")
        return value

    def items(self, name: str, go_type: str) -> list[Any]:
        value = self._data.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.wrong(name, value, go_type)
        return value

    def ints(self, name: str) -> list[int]:
        values = self.items(name, "[]int")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.wrong(f"{name}", value, "int")
        return values

    def raw(self, name: str) -> Any:
        return self._data.get(name)


def messages_of(fields: Fields) -> list[dict[str, Any]]:
    """The `messages` array of a chat request, each entry checked like api.Message.

    Roles come back lower-cased, as api.Message's UnmarshalJSON leaves them; `images` must be
    base64, `tool_calls` objects whose `function.arguments` is an object.
    """
    messages = fields.items("messages", "[]api.Message")
    checked: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise ApiError(
                400,
                f"json: cannot unmarshal {_json_kind(message)} into Go struct field "
                "ChatRequest.messages of type api.Message",
            )
        inner = Fields(message, "ChatRequest.messages")
        for name in ("content", "thinking", "tool_name", "tool_call_id"):
            inner.string(name)
        images_of(inner)
        for call in inner.items("tool_calls", "[]api.ToolCall"):
            _check_tool_call(call)
        checked.append({**message, "role": inner.string("role").lower()})
    return checked


def _check_tool_call(call: Any) -> None:
    struct = "ChatRequest.messages.tool_calls"
    if not isinstance(call, dict):
        raise ApiError(
            400,
            f"json: cannot unmarshal {_json_kind(call)} into Go struct field "
            f"{struct} of type api.ToolCall",
        )
    function = Fields(call, struct).mapping("function")
    inner = Fields(function, f"{struct}.function")
    inner.string("name")
    arguments = function.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        raise ApiError(
            400,
            f"json: cannot unmarshal {_json_kind(arguments)} into Go value of type "
            "map[string]interface {}",
        )


_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def images_of(fields: Fields) -> list[str]:
    """The `images` of a request or message: base64 strings, as Go decodes []byte fields."""
    images = fields.items("images", "[]api.ImageData")
    for image in images:
        if not isinstance(image, str):
            raise fields.wrong("images", image, "api.ImageData")
        text = image.replace("\r", "").replace("\n", "")
        match = _BASE64.match(text)
        end = match.end() if match else 0
        if end != len(text) or len(text) % 4:
            raise ApiError(400, f"illegal base64 data at input byte {min(end, len(text))}")
    return images


THINK_LEVELS = ("high", "medium", "low", "max")


def think_value(fields: Fields) -> bool | str | None:
    """`think` as api.ThinkValue reads it: a boolean, a level, or None when absent."""
    value = fields.raw("think")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value not in THINK_LEVELS:
            raise ApiError(
                400,
                f'invalid think value: "{value}" (must be "high", "medium", "low", "max", '
                "true, or false)",
            )
        return value
    raise ApiError(
        400, 'think must be a boolean or string ("high", "medium", "low", "max", true, or false)'
    )


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def keep_alive_seconds(value: Any) -> float:
    """`keep_alive` in seconds (inf: forever), accepting a number or a Go duration string."""
    if value is None:
        return 300.0
    if isinstance(value, bool):
        raise ApiError(400, "json: cannot unmarshal bool into Go value of type api.Duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_go_duration(value)
    else:
        raise ApiError(400, f"Unsupported type: '{type(value).__name__}'")
    return math.inf if seconds < 0 else seconds


def _parse_go_duration(text: str) -> float:
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    position, total = 0, 0.0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise ApiError(400, f'time: invalid duration "{text}"')
    return -total if text.startswith("-") else total


def int_option(options: dict[str, Any], name: str) -> int | None:
    """An integer option, tolerating JSON floats with integral values like Go's decoder."""
    value = options.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def stop_option(options: dict[str, Any]) -> list[str]:
    value = options.get("stop")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []
