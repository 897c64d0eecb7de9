"""The simulator's new shapes on the wire, where the official clients hide them: SSE framing
and `[DONE]`, OpenAI error bodies and statuses, faults through /v1, the native tool-call and
thinking stream objects, and /api/embed's normalisation and errors. Raw HTTP, byte for byte
where Ollama's own code fixes the bytes."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.proxy.simulator.conftest import module_simulator
from tests.support.simulator import (
    completion_tokens,
    embedding_vector,
    thinking_tokens,
    tool_call_for,
)
from tests.support.simulator.process import SimulatorProcess

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "required": ["term", "limit", "exact"],
            "properties": {
                "term": {"type": "string"},
                "limit": {"type": "integer"},
                "exact": {"type": "boolean"},
            },
        },
    },
}
USER = [{"role": "user", "content": "find it"}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with module_simulator(
        first_token_delay=0.01,
        tokens_per_second=1000.0,
        models=["llama3.2", "codellama:7b", "qwen3:0.6b", "nomic-embed-text"],
    ) as s:
        yield s


def sse_events(response: httpx.Response) -> list[str]:
    """The `data:` payloads of an SSE body, checking the framing on the way."""
    assert response.headers["content-type"] == "text/event-stream"
    body = response.text
    assert body.endswith("\n\n")
    events = body[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events), events
    return [e.removeprefix("data: ") for e in events]


def chunks(events: list[str]) -> list[dict[str, Any]]:
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


# -- /v1 on the wire ----------------------------------------------------------------------


def test_v1_chat_stream_framing_role_finish_and_usage(client: httpx.Client) -> None:
    body = {
        "model": "llama3.2",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    *content, finish, usage = chunks(sse_events(client.post("/v1/chat/completions", json=body)))
    expected = completion_tokens("find it")
    assert [c["choices"][0]["delta"].get("content") for c in content] == expected
    assert content[0]["choices"][0]["delta"] == {"role": "assistant", "content": expected[0]}
    assert all("role" not in c["choices"][0]["delta"] for c in content[1:])
    for chunk in (*content, finish, usage):
        assert list(chunk)[:6] == [
            "id", "object", "created", "model", "system_fingerprint", "choices"
        ]
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["system_fingerprint"] == "fp_ollama"
        assert chunk["id"] == content[0]["id"] and chunk["id"].startswith("chatcmpl-")
        assert chunk["created"] == content[0]["created"]  # one timestamp per stream
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert "usage" not in finish
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": len(expected),
        "total_tokens": 2 + len(expected),
    }


def test_v1_chat_is_not_streamed_unless_asked(client: httpx.Client) -> None:
    reply = client.post("/v1/chat/completions", json={"model": "llama3.2", "messages": USER})
    assert reply.headers["content-type"] == "application/json"
    assert reply.text.endswith("}\n")  # Go's json.Encoder
    body = reply.json()
    assert list(body) == [
        "id", "object", "created", "model", "system_fingerprint", "choices", "usage"
    ]
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(completion_tokens("find it"))},
            "finish_reason": "stop",
        }
    ]


def test_v1_tool_call_stream(client: httpx.Client) -> None:
    body = {"model": "llama3.2", "messages": USER, "tools": [TOOL], "stream": True}
    call, finish = chunks(sse_events(client.post("/v1/chat/completions", json=body)))
    expected = tool_call_for("llama3.2", TOOL, "find it")
    assert call["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": expected["id"],
                "index": 0,
                "type": "function",
                "function": {
                    "name": "lookup",
                    "arguments": json.dumps(
                        expected["function"]["arguments"], separators=(",", ":")
                    ),
                },
            }
        ],
    }
    assert finish["choices"][0]["finish_reason"] == "tool_calls"


def test_v1_completions_stream_and_reply(client: httpx.Client) -> None:
    body = {
        "model": "llama3.2",
        "prompt": "once",
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    *texts, last, usage = chunks(sse_events(client.post("/v1/completions", json=body)))
    assert [t["choices"][0]["text"] for t in texts] == completion_tokens("once")[:3]
    assert list(texts[0])[:4] == ["id", "object", "created", "choices"]
    assert all(t["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
               for t in (*texts, last))
    assert last["choices"][0] == {"text": "", "index": 0, "finish_reason": "length"}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3
    whole = client.post("/v1/completions", json={"model": "llama3.2", "prompt": "once"}).json()
    assert whole["object"] == "text_completion" and whole["id"].startswith("cmpl-")
    assert whole["choices"][0]["text"] == "".join(completion_tokens("once"))


@pytest.mark.parametrize(
    ("path", "body", "status", "kind", "message"),
    [
        ("/v1/chat/completions", {"model": "ghost", "messages": USER}, 404, "not_found_error",
         "model 'ghost' not found"),
        ("/v1/chat/completions", {"model": "llama3.2", "messages": []}, 400,
         "invalid_request_error", "[] is too short - 'messages'"),
        ("/v1/chat/completions", {"messages": USER}, 400, "invalid_request_error",
         "model is required"),
        ("/v1/chat/completions", {"model": "codellama:7b", "messages": USER, "tools": [TOOL]},
         400, "invalid_request_error",
         "registry.ollama.ai/library/codellama:7b does not support tools"),
        ("/v1/chat/completions", {"model": "llama3.2", "messages": [{"role": "user"}]}, 400,
         "invalid_request_error", "invalid message content type: <nil>"),
        ("/v1/chat/completions", {"model": "llama3.2", "messages": USER, "max_tokens": "9"},
         400, "invalid_request_error",
         "json: cannot unmarshal string into Go struct field "
         "ChatCompletionRequest.max_tokens of type int"),
        ("/v1/completions", {"model": "llama3.2", "prompt": "x", "stop": [1]}, 400,
         "invalid_request_error", "invalid type for 'stop' field: float64"),
        ("/v1/embeddings", {"model": "nomic-embed-text", "input": []}, 400,
         "invalid_request_error", "invalid input"),
        ("/v1/embeddings", {"model": "nomic-embed-text", "input": "x", "encoding_format": "hex"},
         400, "invalid_request_error",
         "Invalid value for 'encoding_format' = hex. Supported values: ['float', 'base64']."),
        ("/v1/embeddings", {"model": "ghost", "input": "x"}, 404, "not_found_error",
         'model "ghost" not found, try pulling it first'),
    ],
)
def test_v1_error_bodies(
    client: httpx.Client, path: str, body: Any, status: int, kind: str, message: str
) -> None:
    reply = client.post(path, json=body)
    assert reply.status_code == status
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == {"error": {"message": message, "type": kind, "param": None,
                                      "code": None}}


def test_v1_empty_body_and_unknown_model_route(client: httpx.Client) -> None:
    empty = client.post("/v1/chat/completions", content=b"")
    assert empty.status_code == 400
    assert empty.json()["error"]["message"] == "EOF"
    missing = client.get("/v1/models/ghost")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"


def test_v1_models_shapes(client: httpx.Client) -> None:
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list"
    assert listed["data"][0] == {
        "id": "llama3.2:latest",
        "object": "model",
        "created": listed["data"][0]["created"],
        "owned_by": "library",
    }
    assert client.get("/v1/models/qwen3:0.6b").json()["id"] == "qwen3:0.6b"


def test_faults_reach_v1(sim: SimulatorProcess, client: httpx.Client) -> None:
    sim.set_fault("error500", count=1, message="runner died")
    failed = client.post("/v1/chat/completions", json={"model": "llama3.2", "messages": USER})
    assert failed.status_code == 500
    assert failed.json()["error"] == {"message": "runner died", "type": "api_error",
                                      "param": None, "code": None}

    sim.set_fault("busy503", count=1)
    busy = client.post("/v1/completions", json={"model": "llama3.2", "prompt": "x"})
    assert busy.status_code == 503 and busy.json()["error"]["type"] == "api_error"

    # Ollama's writer decodes the native error line as an empty response: one empty chunk,
    # and the stream ends without [DONE].
    sim.set_fault("midstream_error", count=1)
    body = {"model": "llama3.2", "messages": USER, "stream": True}
    events = sse_events(client.post("/v1/chat/completions", json=body))
    assert "[DONE]" not in events
    *tokens, broken = [json.loads(e) for e in events]
    assert len(tokens) == 3
    assert broken["choices"][0]["delta"] == {"content": ""}
    assert broken["model"] == ""
    assert sim.stats()["errored"] == 2


def test_v1_requests_are_recorded_as_sent(sim: SimulatorProcess, client: httpx.Client) -> None:
    body = {"model": "llama3.2", "messages": USER, "max_tokens": 2}
    client.post("/v1/chat/completions", json=body)
    stats = sim.stats()
    assert stats["requests"] == {"/v1/chat/completions": 1}
    assert stats["last_body"] == {"/v1/chat/completions": body}
    assert stats["completed"] == 1


# -- native tools, thinking, images ---------------------------------------------------------


def test_native_tool_call_stream_objects(client: httpx.Client) -> None:
    body = {"model": "llama3.2", "messages": USER, "tools": [TOOL]}
    lines = [json.loads(line) for line in client.post("/api/chat", json=body).text.splitlines()]
    call, final = lines
    expected = tool_call_for("llama3.2", TOOL, "find it")
    assert call["message"] == {"role": "assistant", "content": "", "tool_calls": [expected]}
    assert expected["id"].startswith("call_") and len(expected["id"]) == 13
    assert set(expected["function"]["arguments"]) == {"term", "limit", "exact"}
    assert expected["function"]["arguments"]["exact"] is True
    assert call["done"] is False
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["done_reason"] == "stop" and final["eval_count"] > 1


def test_native_thinking_stream_and_defaults(client: httpx.Client) -> None:
    body = {"model": "qwen3:0.6b", "prompt": "ponder"}  # thinking models think by default
    lines = [json.loads(x) for x in client.post("/api/generate", json=body).text.splitlines()]
    thinking = [x["thinking"] for x in lines if "thinking" in x]
    assert thinking == thinking_tokens("ponder")
    assert all(x["response"] == "" for x in lines if "thinking" in x)
    assert "".join(x["response"] for x in lines) == "".join(completion_tokens("ponder"))
    off = client.post("/api/generate", json={**body, "think": False, "stream": False}).json()
    assert "thinking" not in off


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"model": "llama3.2", "prompt": "x", "think": "high"},
         '"llama3.2" does not support thinking'),
        ({"model": "llama3.2", "prompt": "x", "think": "loud"},
         'invalid think value: "loud" (must be "high", "medium", "low", "max", true, or false)'),
        ({"model": "nomic-embed-text", "prompt": "x"},
         '"nomic-embed-text" does not support generate'),
        ({"model": "llama3.2", "prompt": "x", "images": ["not base64!"]},
         "illegal base64 data at input byte 3"),
    ],
)
def test_native_capability_and_input_errors(
    client: httpx.Client, body: dict[str, Any], error: str
) -> None:
    reply = client.post("/api/generate", json=body)
    assert reply.status_code == 400
    assert reply.json() == {"error": error}


def test_images_count_as_prompt_tokens(client: httpx.Client) -> None:
    image = "aGVsbG8="
    messages = [{"role": "user", "content": "what is this", "images": [image, image]}]
    reply = client.post(
        "/api/chat", json={"model": "llama3.2", "messages": messages, "stream": False}
    ).json()
    assert reply["prompt_eval_count"] == 3 + 2 * 768


def test_format_that_is_neither_json_nor_a_schema_fails_the_generation(
    client: httpx.Client,
) -> None:
    reply = client.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "format": 5})
    assert reply.status_code == 500
    assert reply.json() == {
        "error": 'invalid format: "5"; expected "json" or a valid JSON Schema object'
    }


# -- /api/embed and /api/embeddings ---------------------------------------------------------


def test_embed_normalises_and_cuts_dimensions(client: httpx.Client) -> None:
    body = {"model": "nomic-embed-text", "input": ["one two", "three"]}
    reply = client.post("/api/embed", json=body)
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    data = reply.json()
    assert list(data) == [
        "model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"
    ]
    assert data["model"] == "nomic-embed-text" and data["prompt_eval_count"] == 3
    for vector in data["embeddings"]:
        assert len(vector) == 768
        assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-5)
    cut = client.post("/api/embed", json={**body, "dimensions": 8}).json()["embeddings"][0]
    assert cut == embedding_vector("nomic-embed-text", "one two", 8)
    assert math.isclose(math.fsum(v * v for v in cut), 1.0, rel_tol=1e-5)
    assert cut != data["embeddings"][0][:8]  # normalized again after the cut
    ignored = client.post("/api/embed", json={**body, "dimensions": 5000}).json()
    assert len(ignored["embeddings"][0]) == 768


def test_embed_empty_input_only_loads(client: httpx.Client) -> None:
    for empty in ("", [], None):
        reply = client.post("/api/embed", json={"model": "nomic-embed-text", "input": empty})
        assert reply.json() == {"model": "nomic-embed-text", "embeddings": []}
    assert [m["name"] for m in client.get("/api/ps").json()["models"]] == [
        "nomic-embed-text:latest"
    ]


def test_embed_truncation(client: httpx.Client) -> None:
    long = {"model": "nomic-embed-text", "input": "a b c d", "options": {"num_ctx": 2}}
    cut = client.post("/api/embed", json=long).json()
    assert cut["embeddings"][0] == embedding_vector("nomic-embed-text", "a b")
    assert cut["prompt_eval_count"] == 2
    refused = client.post("/api/embed", json={**long, "truncate": False})
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/embed", {"model": "nomic-embed-text", "input": [1]}, 400, "invalid input type"),
        ("/api/embed", {"model": "nomic-embed-text", "input": {"a": 1}}, 400,
         "invalid input type"),
        ("/api/embed", {"input": "x"}, 404, "model '' not found"),
        ("/api/embed", {"model": "ghost", "input": "x"}, 404,
         'model "ghost" not found, try pulling it first'),
        ("/api/embed", {"model": "nomic-embed-text", "input": "x", "dimensions": "8"}, 400,
         "json: cannot unmarshal string into Go struct field EmbedRequest.dimensions of type int"),
        ("/api/embeddings", {"prompt": "x"}, 400, "model is required"),
        ("/api/embeddings", {"model": "ghost", "prompt": "x"}, 404,
         'model "ghost" not found, try pulling it first'),
    ],
)
def test_embed_errors(
    client: httpx.Client, path: str, body: dict[str, Any], status: int, error: str
) -> None:
    reply = client.post(path, json=body)
    assert reply.status_code == status
    assert reply.json() == {"error": error}


def test_legacy_embeddings_are_not_normalised(client: httpx.Client) -> None:
    reply = client.post("/api/embeddings", json={"model": "nomic-embed-text", "prompt": "hi"})
    vector = reply.json()["embedding"]
    assert len(vector) == 768
    assert not math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-3)
    norm = math.sqrt(math.fsum(v * v for v in vector))
    assert [v / norm for v in vector] == pytest.approx(
        embedding_vector("nomic-embed-text", "hi"), rel=1e-5
    )
    empty = client.post("/api/embeddings", json={"model": "nomic-embed-text", "prompt": ""})
    assert empty.json() == {"embedding": []}
