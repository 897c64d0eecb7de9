"""The simulator driven by the official clients: `ollama` (native API) and `openai` (/v1).

These clients are what users point at Ollama. If they read every simulator reply without
complaint and get the values the simulator's public helpers predict, the simulator cannot have
drifted from the shapes the real clients expect — and a proxy tested against the simulator is
tested against what these clients will send and accept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import ollama
import openai
import pytest
from pydantic import BaseModel

from tests.proxy.simulator.conftest import module_simulator
from tests.support.simulator import (
    completion_tokens,
    embedding_vector,
    structured_text,
    thinking_tokens,
    tool_call_for,
)
from tests.support.simulator.process import SimulatorProcess
from tests.support.timing import scaled

MODELS = ["llama3.2", "mistral", "codellama:7b", "qwen3:0.6b", "nomic-embed-text"]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "required": ["city", "unit", "days"],
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "detailed": {"type": "boolean"},
            },
        },
    },
}


class City(BaseModel):
    name: str
    population: int
    capital: bool
    districts: list[str]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with module_simulator(
        first_token_delay=0.01,
        tokens_per_second=1000.0,
        models=MODELS,
    ) as s:
        yield s


@pytest.fixture
def native(sim: SimulatorProcess) -> ollama.Client:
    return ollama.Client(host=sim.url, timeout=scaled(10))


@pytest.fixture
def oai(sim: SimulatorProcess) -> Iterator[openai.OpenAI]:
    # No retries: a 5xx must surface here, not be hidden by the SDK trying again.
    with openai.OpenAI(
        base_url=sim.url + "/v1", api_key="unused", max_retries=0, timeout=scaled(10)
    ) as client:
        yield client


def text(seed_text: str) -> str:
    return "".join(completion_tokens(seed_text))


# -- the ollama client ---------------------------------------------------------------------


def test_ollama_chat_and_generate_streamed_and_not(native: ollama.Client) -> None:
    messages = [{"role": "user", "content": "why is the sky blue"}]
    whole = native.chat(model="llama3.2", messages=messages)
    assert whole.message.role == "assistant"
    assert whole.message.content == text("why is the sky blue")
    assert whole.done and whole.done_reason == "stop"
    assert whole.eval_count == len(completion_tokens("why is the sky blue"))

    parts = list(native.chat(model="llama3.2", messages=messages, stream=True))
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]

    generated = native.generate(model="mistral", prompt="hello there")
    assert generated.response == text("hello there")
    assert generated.context
    streamed = list(native.generate(model="mistral", prompt="hello there", stream=True))
    assert "".join(p.response or "" for p in streamed) == generated.response
    assert streamed[-1].eval_count == len(completion_tokens("hello there"))


def test_ollama_tool_round_trip(sim: SimulatorProcess, native: ollama.Client) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    reply = native.chat(model="llama3.2", messages=messages, tools=[WEATHER_TOOL])
    # The client's Tool model keeps only type, items, description and enum of a property
    # (`minimum`/`maximum` are dropped), so the arguments follow the schema it really sent.
    sent = sim.stats()["last_body"]["/api/chat"]["tools"][0]
    assert "minimum" not in sent["function"]["parameters"]["properties"]["days"]
    expected = tool_call_for("llama3.2", sent, "weather in Paris?")
    assert reply.message.content == ""
    assert reply.message.tool_calls is not None and len(reply.message.tool_calls) == 1
    call = reply.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert dict(call.function.arguments) == expected["function"]["arguments"]
    arguments = call.function.arguments
    assert set(arguments) == {"city", "unit", "days"}
    assert arguments["unit"] == "celsius"
    assert isinstance(arguments["city"], str) and isinstance(arguments["days"], int)

    streamed = list(native.chat(model="llama3.2", messages=messages, tools=[WEATHER_TOOL],
                                stream=True))
    calls = [p.message.tool_calls for p in streamed if p.message.tool_calls]
    assert len(calls) == 1 and calls[0][0].function.name == "get_weather"

    result = {"role": "tool", "content": "sunny, 21 C", "tool_name": "get_weather"}
    messages += [reply.message, result]
    answer = native.chat(model="llama3.2", messages=messages, tools=[WEATHER_TOOL])
    assert answer.message.tool_calls is None
    assert answer.message.content == text("sunny, 21 C")


def test_ollama_format_json_and_schema(native: ollama.Client) -> None:
    messages = [{"role": "user", "content": "describe a city"}]
    as_json = native.chat(model="llama3.2", messages=messages, format="json")
    assert isinstance(json.loads(as_json.message.content or ""), dict)
    assert as_json.message.content == structured_text("json", "describe a city")

    schema = City.model_json_schema()
    city = native.chat(model="llama3.2", messages=messages, format=schema)
    parsed = City.model_validate_json(city.message.content or "")
    assert parsed.districts and parsed.capital is True
    generated = native.generate(model="llama3.2", prompt="describe a city", format=schema)
    assert City.model_validate_json(generated.response) == parsed


def test_ollama_think(native: ollama.Client) -> None:
    messages = [{"role": "user", "content": "what is 2 + 2"}]
    reply = native.chat(model="qwen3:0.6b", messages=messages, think=True)
    assert reply.message.thinking == "".join(thinking_tokens("what is 2 + 2"))
    assert reply.message.content == text("what is 2 + 2")

    parts = list(native.chat(model="qwen3:0.6b", messages=messages, think=True, stream=True))
    kinds = ["thinking" if p.message.thinking else "content" for p in parts[:-1]]
    assert kinds == sorted(kinds, key=lambda k: k != "thinking")  # all thinking comes first
    assert "thinking" in kinds and "content" in kinds

    plain = native.generate(model="qwen3:0.6b", prompt="what is 2 + 2", think=False)
    assert not plain.thinking
    with pytest.raises(ollama.ResponseError) as refused:
        native.chat(model="llama3.2", messages=messages, think=True)
    assert refused.value.status_code == 400
    assert refused.value.error == '"llama3.2" does not support thinking'


def test_ollama_embed(native: ollama.Client) -> None:
    one = native.embed(model="nomic-embed-text", input="the quick brown fox")
    assert len(one.embeddings) == 1 and len(one.embeddings[0]) == 768
    assert list(one.embeddings[0]) == embedding_vector("nomic-embed-text", "the quick brown fox")
    assert math.isclose(sum(v * v for v in one.embeddings[0]), 1.0, rel_tol=1e-5)

    several = native.embed(model="nomic-embed-text", input=["the quick brown fox", "lazy dog"])
    assert list(several.embeddings[0]) == list(one.embeddings[0])  # deterministic
    assert list(several.embeddings[1]) == embedding_vector("nomic-embed-text", "lazy dog")
    assert several.prompt_eval_count == 6

    wide = native.embed(model="llama3.2", input="x")  # completion models embed too
    assert len(wide.embeddings[0]) == 3072
    short = native.embed(model="nomic-embed-text", input="x", dimensions=64)
    assert list(short.embeddings[0]) == embedding_vector("nomic-embed-text", "x", 64)


def test_ollama_list_show_ps(native: ollama.Client) -> None:
    names = [m.model for m in native.list().models]
    assert names == ["llama3.2:latest", "mistral:latest", "codellama:7b", "qwen3:0.6b",
                     "nomic-embed-text:latest"]
    shown = native.show("nomic-embed-text")
    assert shown.capabilities == ["embedding"]
    assert shown.details is not None and shown.details.family == "nomic-bert"
    assert shown.modelinfo is not None
    assert shown.modelinfo["nomic-bert.embedding_length"] == 768
    assert native.show("qwen3:0.6b").capabilities == ["completion", "tools", "thinking"]

    assert native.ps().models == []
    native.generate(model="llama3.2", prompt="hi")
    running = native.ps().models
    assert [m.model for m in running] == ["llama3.2:latest"]
    assert running[0].size_vram == running[0].size


def test_ollama_unknown_model_is_a_404(native: ollama.Client) -> None:
    for call in (
        lambda: native.chat(model="ghost", messages=[{"role": "user", "content": "x"}]),
        lambda: native.generate(model="ghost", prompt="x"),
        lambda: native.show("ghost"),
        lambda: native.embed(model="ghost", input="x"),
    ):
        with pytest.raises(ollama.ResponseError) as missing:
            call()
        assert missing.value.status_code == 404
        assert "ghost" in missing.value.error


async def test_ollama_async_client_streams_chat(sim: SimulatorProcess) -> None:
    client = ollama.AsyncClient(host=sim.url, timeout=scaled(10))
    messages = [{"role": "user", "content": "stream to me"}]
    pieces = [p async for p in await client.chat(model="mistral", messages=messages, stream=True)]
    assert "".join(p.message.content or "" for p in pieces) == text("stream to me")
    assert pieces[-1].done_reason == "stop"


# -- the openai SDK against /v1 -------------------------------------------------------------


def test_openai_models(oai: openai.OpenAI) -> None:
    listed = oai.models.list()
    assert [m.id for m in listed.data] == ["llama3.2:latest", "mistral:latest", "codellama:7b",
                                           "qwen3:0.6b", "nomic-embed-text:latest"]
    assert {m.owned_by for m in listed.data} == {"library"}
    retrieved = oai.models.retrieve("llama3.2")
    assert retrieved.id == "llama3.2"
    assert retrieved.object == "model"
    assert retrieved.created > 0


def test_openai_chat_streamed_and_not(oai: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "tell me a story"}]
    whole = oai.chat.completions.create(model="llama3.2", messages=messages)
    assert whole.id.startswith("chatcmpl-")
    assert whole.system_fingerprint == "fp_ollama"
    assert whole.choices[0].message.content == text("tell me a story")
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None
    assert whole.usage.completion_tokens == len(completion_tokens("tell me a story"))

    chunks = list(
        oai.chat.completions.create(
            model="llama3.2",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=5,
        )
    )
    *content, finish, usage = chunks
    assert content[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in content[1:])
    assert "".join(c.choices[0].delta.content or "" for c in content) == "".join(
        completion_tokens("tell me a story")[:5]
    )
    assert finish.choices[0].finish_reason == "length"
    assert usage.choices == [] and usage.usage is not None
    assert (usage.usage.completion_tokens, usage.usage.total_tokens) == (5, 9)
    assert len({c.id for c in chunks}) == 1


def test_openai_tool_round_trip(oai: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Oslo?"}]
    first = oai.chat.completions.create(model="mistral", messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    expected = tool_call_for("mistral", WEATHER_TOOL, "weather in Oslo?")
    assert call.id == expected["id"] and call.id.startswith("call_")
    assert call.type == "function"
    assert json.loads(call.function.arguments) == expected["function"]["arguments"]

    streamed = list(oai.chat.completions.create(model="mistral", messages=messages,
                                                tools=[WEATHER_TOOL], stream=True))
    assert streamed[-1].choices[0].finish_reason == "tool_calls"
    deltas = [c.choices[0].delta.tool_calls for c in streamed if c.choices[0].delta.tool_calls]
    assert deltas[0][0].function is not None and deltas[0][0].function.name == "get_weather"

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "snow"},
    ]
    answer = oai.chat.completions.create(model="mistral", messages=messages, tools=[WEATHER_TOOL])
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == text("snow")


def test_openai_json_mode_and_schema(oai: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "a city please"}]
    mode = oai.chat.completions.create(
        model="llama3.2", messages=messages, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(mode.choices[0].message.content or ""), dict)
    parsed = oai.chat.completions.parse(model="llama3.2", messages=messages, response_format=City)
    assert isinstance(parsed.choices[0].message.parsed, City)


def test_openai_embeddings(oai: openai.OpenAI) -> None:
    # The SDK asks for base64 unless told otherwise and decodes the float32 bytes itself.
    packed = oai.embeddings.create(model="nomic-embed-text", input=["alpha", "beta gamma"])
    assert [d.index for d in packed.data] == [0, 1]
    assert packed.usage.prompt_tokens == 3
    for item, source in zip(packed.data, ("alpha", "beta gamma"), strict=True):
        assert item.embedding == pytest.approx(embedding_vector("nomic-embed-text", source),
                                               rel=1e-6)
    floats = oai.embeddings.create(
        model="nomic-embed-text", input="alpha", encoding_format="float", dimensions=32
    )
    assert floats.data[0].embedding == embedding_vector("nomic-embed-text", "alpha", 32)


def test_openai_unknown_model_and_errors(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        oai.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body == {
        "message": "model 'ghost' not found",
        "type": "not_found_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("ghost")
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(model="llama3.2", messages=[])
    assert refused.value.body == {
        "message": "[] is too short - 'messages'",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
