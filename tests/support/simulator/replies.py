"""What the simulated model answers: text, thinking, structured output or a tool call.

The rule, deterministic so that tests on both sides of a proxy can predict every reply:
- thinking (`think` on a thinking model; Ollama turns it on by default for those) streams
  `thinking_tokens(seed_text)` first, as `message.thinking` (chat) or `thinking` (generate);
- with `tools` and a last message from the `user`, the answer is one call to the first tool,
  with arguments `value_for_schema(its parameters, seed_text)` and empty content;
- otherwise, with `format: "json"` the content is `json_object_for(seed_text)` as JSON text,
  with a JSON schema it is `value_for_schema(schema, seed_text)`; either is streamed in
  whitespace-separated pieces like any text;
- otherwise the content is `completion_tokens(seed_text, seed)`.
`seed_text` is the prompt (generate) or the last message's content (chat), so after a `tool`
message the model answers in text seeded on the tool's result.
`options.num_predict` cuts the whole reply (thinking included; a tool call that does not fit is
not sent) with `done_reason: "length"`; `options.stop` cuts the content.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.support.simulator.catalog import normalize_name
from tests.support.simulator.completion import (
    apply_stop,
    completion_tokens,
    count_tokens,
    seeded_random,
    thinking_tokens,
)
from tests.support.simulator.generation import Piece
from tests.support.simulator.payload import ApiError, int_option, stop_option
from tests.support.simulator.structured import json_object_for, value_for_schema

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def format_kind(value: Any) -> str | dict[str, Any] | None:
    """`format` as Ollama's runner reads it: None, "json" or a schema object.

    Anything else fails the generation with a 500, as llm/llama_server.go does once the
    request reaches the runner.
    """
    if value is None or value == "":
        return None
    if value == "json":
        return "json"
    if isinstance(value, dict):
        return value
    raw = json.dumps(value, separators=(",", ":"))
    raise ApiError(
        500, f'invalid format: {json.dumps(raw)}; expected "json" or a valid JSON Schema object'
    )


def tool_call_for(model: str, tool: dict[str, Any], seed_text: str) -> dict[str, Any]:
    """The call the simulated model makes to `tool`, in /api/chat's shape.

    Ollama gives each parsed call a random `call_` + 8 character id; here it is seeded, so the
    same request gets the same id.
    """
    function = tool.get("function") if isinstance(tool.get("function"), dict) else {}
    assert isinstance(function, dict)
    parameters = function.get("parameters")
    rng = seeded_random("tool call id", normalize_name(model), seed_text)
    return {
        "id": "call_" + "".join(rng.choice(_ID_ALPHABET) for _ in range(8)),
        "function": {
            "index": 0,
            "name": str(function.get("name") or ""),
            "arguments": value_for_schema(parameters, seed_text),
        },
    }


def structured_text(fmt: str | dict[str, Any], seed_text: str) -> str:
    """The content a model writes under `format` (a JSON text)."""
    value = json_object_for(seed_text) if fmt == "json" else value_for_schema(fmt, seed_text)
    return json.dumps(value, ensure_ascii=False)


def plan_reply(
    *,
    model: str,
    seed_text: str,
    options: dict[str, Any],
    think: bool,
    fmt: str | dict[str, Any] | None,
    tool: dict[str, Any] | None,
    length: int = 0,
) -> tuple[list[Piece], str]:
    """The pieces of the reply and its `done_reason`, by the rule in the module docstring."""
    seed = int_option(options, "seed")
    thinking = [Piece("thinking", t) for t in thinking_tokens(seed_text, seed)] if think else []
    content: list[Piece]
    if tool is not None:
        call = tool_call_for(model, tool, seed_text)
        cost = max(1, count_tokens(json.dumps(call["function"])))
        content = [Piece("tool_calls", tool_calls=(call,), cost=cost)]
    elif fmt is not None:
        text = structured_text(fmt, seed_text)
        content = [Piece("content", t) for t in re.findall(r"\s*\S+", text)]
    else:
        content = [Piece("content", t) for t in completion_tokens(seed_text, seed, length)]

    done_reason = "stop"
    num_predict = int_option(options, "num_predict")
    pieces = [*thinking, *content]
    if num_predict is not None and num_predict >= 0:
        kept: list[Piece] = []
        spent = 0
        for piece in pieces:
            if spent + piece.cost > num_predict:
                done_reason = "length"
                break
            kept.append(piece)
            spent += piece.cost
        pieces = kept

    texts = [p.text for p in pieces if p.kind == "content"]
    cut, stopped = apply_stop(texts, stop_option(options))
    if stopped:
        pieces = [p for p in pieces if p.kind != "content"] + [Piece("content", t) for t in cut]
        done_reason = "stop"
    return pieces, done_reason
