"""The clients people use, driven through a real proxy process in front of the simulator: the
official `openai` SDK on `/v1`, the official `ollama` client on `/ollama`, LangChain's
ChatOpenAI and ChatOllama. These are the contract of the dialects (not hand-made requests):
if a client's own parsing, exceptions or streaming break, these fail.

Audit rows go to the real Postgres; what every dialect shares (one limiter, audit rows with a
`dialect`, the requests metric's `api` label) is checked across all three.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI

from tests.support.database import count_rows
from tests.support.proxy_process import ProxyProcess, metric
from tests.support.simulator import completion_tokens
from tests.support.simulator.process import SimulatorProcess
from tests.support.timing import scaled, wait_until
from tests.support.tokens import auth, make_token

MODEL = "llama3.2"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "required": ["city"],
                       "properties": {"city": {"type": "string"}}},
    },
}
ROWS = 'SELECT count(*) FROM audit_log WHERE "user" = $1 AND dialect = $2 AND endpoint = $3'


def user_id() -> str:
    return f"client-{uuid.uuid4().hex[:10]}"


def expected_text(prompt: str) -> str:
    """What the simulator answers to `prompt` (its reply is a function of the last message)."""
    return "".join(completion_tokens(prompt))


@pytest.fixture(scope="module")
def proxy(simulator: SimulatorProcess, postgres_url: str,
          proxy_factory: Callable[..., ProxyProcess]) -> ProxyProcess:
    return proxy_factory(OLLAMA_URL=simulator.url, DATABASE_URL=postgres_url)


@pytest.fixture
def oa(proxy: ProxyProcess) -> Iterator[openai.OpenAI]:
    # max_retries=0: a refusal must reach the test as the SDK's exception, not be retried away.
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=make_token(), max_retries=0,
                       timeout=scaled(30)) as client:
        yield client


@pytest.fixture
def ol(proxy: ProxyProcess) -> ollama.Client:
    return ollama.Client(host=f"{proxy.url}/ollama", headers=auth(), timeout=scaled(30))


# -- openai ----------------------------------------------------------------------------------


def test_openai_lists_and_retrieves_models(oa: openai.OpenAI) -> None:
    ids = [m.id for m in oa.models.list()]
    assert ids == ["llama3.2:latest", "mistral:latest", "codellama:7b"]
    one = oa.models.retrieve(MODEL)
    assert (one.id, one.object, one.owned_by) == (MODEL, "model", "library")
    with pytest.raises(openai.NotFoundError) as missing:
        oa.models.retrieve("ghost")
    assert missing.value.body == {"message": "model 'ghost' not found", "type": "not_found_error",
                                  "param": None, "code": "model_not_found"}


def test_openai_chat_answers_with_usage(oa: openai.OpenAI) -> None:
    reply = oa.chat.completions.create(model=MODEL, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}])
    tokens = completion_tokens("hello there")
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    assert reply.model == MODEL
    choice = reply.choices[0]
    assert (choice.message.role, choice.message.content) == ("assistant", "".join(tokens))
    assert choice.finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == len(tokens)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + len(tokens)


def test_openai_chat_streams_chunks_then_usage(oa: openai.OpenAI) -> None:
    chunks = list(oa.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream it"}], stream=True,
        stream_options={"include_usage": True}))
    tokens = completion_tokens("stream it")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(tokens)
    finish, usage = chunks[-2], chunks[-1]
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.completion_tokens == len(tokens)
    assert len({c.id for c in chunks}) == 1


def test_openai_tool_call_round_trip(oa: openai.OpenAI, sim: SimulatorProcess) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = oa.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    assert call.id

    messages += [choice.message,
                 {"role": "tool", "tool_call_id": call.id, "content": "18 degrees, sunny"}]
    second = oa.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == expected_text("18 degrees, sunny")
    sent = sim.stats()["last_body"]["/api/chat"]
    assert sent["tools"] == [WEATHER_TOOL]
    assert sent["messages"][-1] == {"role": "tool", "content": "18 degrees, sunny",
                                    "tool_name": "get_weather"}
    assert sent["messages"][-2]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_openai_json_mode_and_schema(oa: openai.OpenAI, sim: SimulatorProcess) -> None:
    reply = oa.chat.completions.create(model=MODEL, response_format={"type": "json_object"},
                                       messages=[{"role": "user", "content": "as JSON"}])
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)
    assert sim.stats()["last_body"]["/api/chat"]["format"] == "json"

    schema = {"type": "object", "required": ["name", "age"],
              "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
    reply = oa.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "a person"}],
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
    person = json.loads(reply.choices[0].message.content or "")
    assert isinstance(person["name"], str) and isinstance(person["age"], int)
    assert sim.stats()["last_body"]["/api/chat"]["format"] == schema


def test_openai_embeddings(oa: openai.OpenAI, proxy: ProxyProcess) -> None:
    # The SDK asks for base64 unless told otherwise; both encodings give the same vectors.
    default = oa.embeddings.create(model=MODEL, input=["first text", "second text"])
    floats = oa.embeddings.create(model=MODEL, input=["first text", "second text"],
                                  encoding_format="float")
    assert [d.index for d in default.data] == [0, 1]
    for encoded, plain in zip(default.data, floats.data, strict=True):
        assert len(encoded.embedding) == len(plain.embedding) == 3072
        assert encoded.embedding == pytest.approx(plain.embedding, rel=1e-6, abs=1e-7)
    assert floats.data[0].embedding != floats.data[1].embedding
    assert default.usage.prompt_tokens > 0
    with httpx.Client(base_url=proxy.url, headers=auth()) as raw:
        native = raw.post("/api/llm/embed", json={"model": MODEL, "input": "first text"})
    assert native.status_code == 200, native.text
    assert native.json()["embeddings"][0] == pytest.approx(floats.data[0].embedding, rel=1e-6)


def test_openai_errors_are_the_sdks_own_exceptions(proxy: ProxyProcess,
                                                   oa: openai.OpenAI) -> None:
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="not-a-token",
                       max_retries=0) as stranger, pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    with pytest.raises(openai.NotFoundError) as missing:
        oa.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                   extra_body={"options": {"num_gpu": 9}})
    assert "Extra inputs are not permitted" in str(bad.value)


# -- ollama ----------------------------------------------------------------------------------


def test_ollama_chat_and_generate(ol: ollama.Client) -> None:
    chat = ol.chat(model=MODEL, messages=[{"role": "user", "content": "hi ollama"}])
    assert chat.message.content == expected_text("hi ollama")
    assert chat.done and chat.done_reason == "stop"
    assert chat.eval_count == len(completion_tokens("hi ollama"))
    parts = list(ol.chat(model=MODEL, messages=[{"role": "user", "content": "hi ollama"}],
                         stream=True))
    assert "".join(p.message.content or "" for p in parts) == expected_text("hi ollama")
    assert parts[-1].done and parts[-1].eval_count == chat.eval_count

    generated = ol.generate(model=MODEL, prompt="why is the sky blue")
    assert generated.response == expected_text("why is the sky blue")
    pieces = list(ol.generate(model=MODEL, prompt="why is the sky blue", stream=True))
    assert "".join(p.response for p in pieces) == generated.response
    assert pieces[-1].done and pieces[-1].done_reason == "stop"


def test_ollama_embed_list_show_ps(ol: ollama.Client) -> None:
    one = ol.embed(model=MODEL, input="a text")
    several = ol.embed(model=MODEL, input=["a text", "another"])
    assert len(one.embeddings) == 1 and len(several.embeddings) == 2
    assert len(one.embeddings[0]) == 3072
    assert list(several.embeddings[0]) == pytest.approx(list(one.embeddings[0]))

    assert [m.model for m in ol.list().models] == ["llama3.2:latest", "mistral:latest",
                                                   "codellama:7b"]
    shown = ol.show(MODEL)
    assert shown.details is not None and shown.details.family == "llama"
    assert shown.capabilities is not None and "completion" in shown.capabilities
    assert "llama3.2:latest" in [m.model for m in ol.ps().models]  # loaded by the calls above


def test_ollama_without_a_token_is_401(proxy: ProxyProcess) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=f"{proxy.url}/ollama").chat(
            model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 401
    assert refused.value.error == "missing bearer token"


def test_ollama_tools_reach_the_model(ol: ollama.Client) -> None:
    reply = ol.chat(model=MODEL, messages=[{"role": "user", "content": "weather in Oslo?"}],
                    tools=[WEATHER_TOOL])
    assert reply.message.tool_calls is not None
    assert reply.message.tool_calls[0].function.name == "get_weather"
    assert "city" in reply.message.tool_calls[0].function.arguments


# -- LangChain -------------------------------------------------------------------------------


def test_langchain_chat_openai_invokes_and_streams(proxy: ProxyProcess) -> None:
    llm = ChatOpenAI(model=MODEL, base_url=f"{proxy.url}/v1", api_key=make_token(),
                     max_retries=0, timeout=scaled(30))
    assert llm.invoke("hello langchain").content == expected_text("hello langchain")
    streamed = "".join(str(chunk.content) for chunk in llm.stream("hello langchain"))
    assert streamed == expected_text("hello langchain")


def test_langchain_chat_ollama_invokes_and_streams(proxy: ProxyProcess) -> None:
    llm = ChatOllama(model=MODEL, base_url=f"{proxy.url}/ollama",
                     client_kwargs={"headers": auth(), "timeout": scaled(30)})
    assert llm.invoke("hello ollama chain").content == expected_text("hello ollama chain")
    streamed = "".join(str(chunk.content) for chunk in llm.stream("hello ollama chain"))
    assert streamed == expected_text("hello ollama chain")


# -- what the dialects share -----------------------------------------------------------------


def test_audit_rows_and_metrics_name_the_dialect(proxy: ProxyProcess, postgres_url: str) -> None:
    user = user_id()
    token = make_token(user)
    with openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=token, max_retries=0) as oa:
        oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a"}])
    ollama.Client(host=f"{proxy.url}/ollama", headers=auth(user)).generate(model=MODEL,
                                                                          prompt="b")
    with httpx.Client(base_url=proxy.url, headers=auth(user)) as raw:
        assert raw.post("/api/llm/generate", json={"model": MODEL, "prompt": "c",
                                                   "stream": False}).status_code == 200
    expected = {("openai", "/v1/chat/completions"), ("ollama", "/ollama/api/generate"),
                ("llm", "/api/llm/generate")}
    for dialect, endpoint in expected:
        assert wait_until(lambda d=dialect, e=endpoint: count_rows(  # type: ignore[misc]
            postgres_url, ROWS, user, d, e) == 1, timeout=20), (dialect, endpoint)
    for dialect, endpoint in expected:
        assert metric(proxy, "llm_proxy_requests_total", api=dialect, endpoint=endpoint,
                      status="200") >= 1


def test_one_limiter_across_the_dialects(simulator: SimulatorProcess,
                                         proxy_factory: Callable[..., ProxyProcess]) -> None:
    limited = proxy_factory(OLLAMA_URL=simulator.url, PROXY_RATE_LIMIT="10/minute")
    user = user_id()
    token = make_token(user)
    oa = openai.OpenAI(base_url=f"{limited.url}/v1", api_key=token, max_retries=0)
    ol = ollama.Client(host=f"{limited.url}/ollama", headers=auth(user))
    raw = httpx.Client(base_url=limited.url, headers=auth(user))
    ask = {
        "openai chat": lambda: oa.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}]),
        "openai embeddings": lambda: oa.embeddings.create(model=MODEL, input="x"),
        "ollama chat": lambda: ol.chat(model=MODEL, messages=[{"role": "user", "content": "x"}]),
        "ollama generate": lambda: ol.generate(model=MODEL, prompt="x"),
        "llm generate": lambda: raw.post("/api/llm/generate", json={
            "model": MODEL, "prompt": "x", "stream": False}).raise_for_status(),
    }
    for name in [*ask, *ask]:  # ten requests, two in each way
        ask[name]()
    with pytest.raises(openai.RateLimitError) as by_openai:
        ask["openai chat"]()
    assert int(by_openai.value.response.headers["retry-after"]) >= 1
    with pytest.raises(ollama.ResponseError) as by_ollama:
        ask["ollama generate"]()
    assert by_ollama.value.status_code == 429
    refused = raw.post("/api/llm/generate", json={"model": MODEL, "prompt": "x",
                                                  "stream": False})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    oa.close()
    raw.close()
