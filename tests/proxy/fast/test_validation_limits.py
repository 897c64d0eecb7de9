"""Limits set by configuration, in process, on SQLite and on the real Postgres: the model
allowlist, control characters, sampling bounds, the num_predict cap, messages per request and
the body size cap.

Every refusal is checked three ways: the caller gets a clear status and message; nothing
reached Ollama (the simulator's own counters) and no conversation was stored; and the refusal
was audited (its row, found by the id the server gave it in `X-Request-ID`, appears in
/api/admin/audit, carrying the id the test sent as its `correlation_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import sim_stats
from tests.support.timing import wait_until_async
from tests.support.tokens import admin_auth, auth

pytestmark = pytest.mark.usefixtures("sim")

MAX_BODY = 2048
NOT_ALLOWED = "model 'mistral' is not allowed on this proxy (allowed: llama3.2)"


@pytest.fixture(scope="module")
async def proxy(make_proxy: MakeProxy, database_url: str) -> InProcessProxy:
    return await make_proxy(database_url=database_url, proxy_model_allowlist="llama3.2",
                            proxy_max_num_predict=10, proxy_max_messages=3,
                            proxy_max_body_bytes=MAX_BODY)


def upstream(sim) -> dict[str, int]:
    counts = sim_stats(sim)["requests"]
    return {path: int(counts.get(path, 0)) for path in ("/api/generate", "/api/chat")}


def last_sent(sim, path: str = "/api/generate") -> dict[str, Any]:
    body: dict[str, Any] = sim_stats(sim)["last_body"][path]
    return body


def new_correlation_id() -> str:
    return f"limits-{uuid.uuid4().hex[:16]}"


async def post(proxy: InProcessProxy, path: str, body: Any,
               headers: dict[str, str] | None = None) -> httpx.Response:
    return await proxy.client.post(path, json=body, headers={**auth(), **(headers or {})})


def generate_body(**fields: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "prompt": "hello", "stream": False, **fields}


def chat_body(messages: list[dict[str, str]], **fields: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "messages": messages, "stream": False, **fields}


def say(*texts: str) -> list[dict[str, str]]:
    roles = ["user", "assistant"]
    return [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)]


class Refusals:
    """Sends requests expected to be refused, and checks them; `audited()` checks the audit."""

    def __init__(self, proxy: InProcessProxy, sim) -> None:
        self.proxy = proxy
        self.sim = sim
        # The server's request id -> (expected status, the correlation id the test sent).
        self.expected: dict[str, tuple[int, str]] = {}
        self.conversations: list[str] = []

    async def send(self, path: str, body: Any, status: int, *mentions: str,
                   raw: bytes | AsyncIterator[bytes] | None = None) -> httpx.Response:
        before = upstream(self.sim)
        correlation_id = new_correlation_id()
        headers = {**auth(), "X-Request-ID": correlation_id}
        client = self.proxy.client
        if raw is not None:
            response = await client.post(path, content=raw, headers=headers)
        else:
            response = await client.post(path, json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        for mention in mentions:
            assert mention in error, (mention, error)
        assert upstream(self.sim) == before, f"refused but sent upstream: {body!r}"
        self.expect(response, correlation_id)
        if isinstance(body, dict) and body.get("context_id"):
            self.conversations.append(body["context_id"])
        return response

    def expect(self, response: httpx.Response, correlation_id: str) -> None:
        request_id = response.headers["x-request-id"]
        assert request_id != correlation_id, "the server must name the request itself"
        assert response.headers["x-correlation-id"] == correlation_id
        self.expected[request_id] = (response.status_code, correlation_id)

    async def audited(self) -> None:
        """Every refusal has its audit row, with its status; no conversation was stored."""
        client = self.proxy.client
        for context_id in self.conversations:
            response = await client.get(f"/api/llm/conversations/{context_id}", headers=auth())
            assert response.status_code == 404, f"conversation {context_id} was stored"
        found: dict[str, dict[str, Any]] = {}

        async def all_found() -> bool:
            for status in {status for status, _ in self.expected.values()}:
                page = (await client.get("/api/admin/audit", headers=admin_auth(),
                                         params={"status": status, "limit": 500})).json()
                found.update({e["id"]: e for e in page["entries"] if e["id"] in self.expected})
            return len(found) == len(self.expected)

        with contextlib.suppress(AssertionError):  # the check below names what is missing
            await wait_until_async(all_found, interval=0.1)
        missing = sorted(set(self.expected) - set(found))
        assert missing == [], f"refusals without an audit row: {missing}"
        for request_id, (status, correlation_id) in self.expected.items():
            assert found[request_id]["status"] == status
            assert found[request_id]["correlation_id"] == correlation_id


@pytest.fixture
async def refusals(proxy: InProcessProxy, sim) -> AsyncIterator[Refusals]:
    checker = Refusals(proxy, sim)
    yield checker
    await checker.audited()


# -- the model allowlist ------------------------------------------------------------------------


async def test_models_outside_the_allowlist_are_refused(refusals: Refusals) -> None:
    for stream in (False, True):
        await refusals.send("/api/llm/generate", generate_body(model="mistral", stream=stream), 403,
                            NOT_ALLOWED)
    await refusals.send("/api/llm/chat", chat_body(say("hi"), model="mistral",
                                                   context_id=uuid.uuid4().hex), 403, NOT_ALLOWED)
    for model in ("mistral:latest", "codellama:7b", "llama3.2:1b"):
        await refusals.send("/api/llm/generate", generate_body(model=model), 403, f"'{model}'",
                            "allowed: llama3.2")


async def test_allowed_models_work_under_either_spelling(proxy: InProcessProxy, sim) -> None:
    for model in ("llama3.2", "llama3.2:latest"):
        response = await post(proxy, "/api/llm/generate", generate_body(model=model))
        assert response.status_code == 200, response.text
        assert last_sent(sim)["model"] == model
    assert upstream(sim)["/api/generate"] == 2


async def test_model_list_shows_only_allowed_models(proxy: InProcessProxy) -> None:
    client = proxy.client
    response = await client.get("/api/llm/models", headers=auth())
    assert response.status_code == 200
    assert [m["name"] for m in response.json()["models"]] == ["llama3.2:latest"]


# -- control characters -------------------------------------------------------------------------


CONTROL = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"]


async def test_control_characters_are_refused_wherever_text_goes(refusals: Refusals) -> None:
    for char in CONTROL:
        point = f"U+{ord(char):04X}"
        await refusals.send("/api/llm/generate", generate_body(prompt=f"abc{char}def"), 422,
                            "prompt contains a control character", point, "position 3")
        await refusals.send("/api/llm/generate", generate_body(system=f"{char}be brief"), 422,
                            "system contains a control character", point, "position 0")
        await refusals.send("/api/llm/chat", chat_body(say("fine", "fine too", f"bad{char}"),
                                                       context_id=uuid.uuid4().hex), 422,
                            "messages[2].content contains a control character", point)


async def test_tab_newline_and_carriage_return_are_accepted(proxy: InProcessProxy, sim) -> None:
    text = "line one\r\n\tline two\nline three\t"
    response = await post(proxy, "/api/llm/generate",
                          generate_body(prompt=text, system="be\tbrief\r\n",
                                        options={"num_predict": 2}))
    assert response.status_code == 200, response.text
    sent = last_sent(sim)
    assert (sent["prompt"], sent["system"]) == (text, "be\tbrief\r\n")

    context_id = uuid.uuid4().hex
    chat = await post(proxy, "/api/llm/chat", chat_body(say(text), context_id=context_id,
                                                        options={"num_predict": 2}))
    assert chat.status_code == 200, chat.text
    assert last_sent(sim, "/api/chat")["messages"] == [{"role": "user", "content": text}]
    client = proxy.client
    stored = (await client.get(f"/api/llm/conversations/{context_id}", headers=auth())).json()
    assert stored["messages"][0]["content"] == text


# -- sampling bounds ----------------------------------------------------------------------------


async def test_temperature_bounds(proxy: InProcessProxy, sim, refusals: Refusals) -> None:
    for temperature in (0, 0.0, 1.5, 2, 2.0):
        response = await post(proxy, "/api/llm/generate",
                              generate_body(options={"temperature": temperature, "num_predict": 2}))
        assert response.status_code == 200, temperature
        assert last_sent(sim)["options"]["temperature"] == temperature
    for temperature in (2.01, -0.01, 100, "hot"):
        await refusals.send("/api/llm/generate",
                            generate_body(options={"temperature": temperature}), 422,
                            "temperature")
    await refusals.send("/api/llm/chat", chat_body(say("hi"), options={"temperature": 2.5}), 422,
                        "temperature")


async def test_num_predict_is_capped_by_configuration(proxy: InProcessProxy, sim,
                                                      refusals: Refusals) -> None:
    await refusals.send("/api/llm/generate", generate_body(options={"num_predict": 11}), 422,
                        "num_predict must be at most 10", "PROXY_MAX_NUM_PREDICT")
    await refusals.send("/api/llm/chat", chat_body(say("hi"), options={"num_predict": 4096},
                                                   context_id=uuid.uuid4().hex), 422,
                        "num_predict must be at most 10")
    for options, sent in (({"num_predict": 10}, 10), ({"num_predict": 1}, 1), (None, 10),
                          ({}, 10), ({"num_predict": -1}, 10), ({"temperature": 0.5}, 10)):
        body = generate_body() if options is None else generate_body(options=options)
        response = await post(proxy, "/api/llm/generate", body)
        assert response.status_code == 200, options
        assert last_sent(sim)["options"]["num_predict"] == sent, options
        assert response.json()["usage"]["completion_tokens"] <= 10
    chat = await post(proxy, "/api/llm/chat", chat_body(say("hi")))
    assert chat.status_code == 200
    assert last_sent(sim, "/api/chat")["options"]["num_predict"] == 10


async def test_messages_per_request_are_capped(proxy: InProcessProxy, sim,
                                               refusals: Refusals) -> None:
    three = await post(proxy, "/api/llm/chat", chat_body(say("one", "two", "three")))
    assert three.status_code == 200, three.text
    assert len(last_sent(sim, "/api/chat")["messages"]) == 3
    await refusals.send("/api/llm/chat", chat_body(say("one", "two", "three", "four"),
                                                   context_id=uuid.uuid4().hex), 422,
                        "too many messages: 4; the limit is 3")


# -- the body size cap --------------------------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid generate body of exactly `size` bytes."""
    empty = json.dumps(generate_body(prompt="", options={"num_predict": 2})).encode()
    body = json.dumps(generate_body(prompt="x" * (size - len(empty)),
                                    options={"num_predict": 2})).encode()
    assert len(body) == size
    return body


async def test_bodies_over_the_cap_get_413(proxy: InProcessProxy, sim, refusals: Refusals) -> None:
    for size in (MAX_BODY, MAX_BODY - 100):
        client = proxy.client
        response = await client.post("/api/llm/generate", content=padded(size), headers=auth())
        assert response.status_code == 200, (size, response.text)
    assert upstream(sim)["/api/generate"] == 2
    for size in (MAX_BODY + 1, 10 * MAX_BODY):
        await refusals.send("/api/llm/generate", None, 413, f"larger than {MAX_BODY} bytes",
                            "PROXY_MAX_BODY_BYTES", raw=padded(size))
    # Without a Content-Length the bytes are counted as they arrive.
    big = padded(3 * MAX_BODY)

    async def in_two_chunks() -> AsyncIterator[bytes]:
        yield big[:1000]
        yield big[1000:]

    await refusals.send("/api/llm/generate", None, 413, "PROXY_MAX_BODY_BYTES",
                        raw=in_two_chunks())


async def test_a_chunked_body_over_the_cap_is_never_acted_on(proxy: InProcessProxy, sim,
                                                             refusals: Refusals) -> None:
    """The first chunk alone is a complete, valid request; the body then grows past the cap.

    The proxy answers 413, so it must not have run the request: no generation upstream, no
    conversation stored.
    """
    context_id = uuid.uuid4().hex
    head = json.dumps(chat_body(say("store me"), context_id=context_id,
                                options={"num_predict": 2})).encode()
    assert len(head) < MAX_BODY

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        # Not a wait for a condition: the pause makes the server receive the two chunks as two
        # separate reads, which is the case under test.
        await asyncio.sleep(0.3)
        yield b" " * MAX_BODY

    before = upstream(sim)
    correlation_id = new_correlation_id()
    client = proxy.client
    response = await client.post("/api/llm/chat", content=chunks(),
                                 headers={**auth(), "X-Request-ID": correlation_id})
    assert response.status_code == 413
    refusals.expect(response, correlation_id)
    assert "PROXY_MAX_BODY_BYTES" in response.json()["error"]
    stored = await client.get(f"/api/llm/conversations/{context_id}", headers=auth())
    sent = upstream(sim)["/api/chat"] - before["/api/chat"]
    assert (sent, stored.status_code) == (0, 404), (
        f"answered 413, yet {sent} generation(s) ran upstream and the conversation lookup "
        f"gave {stored.status_code}: {stored.text[:200]}")
