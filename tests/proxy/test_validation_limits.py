"""Limits set by configuration, over real HTTP, on SQLite and on the real Postgres: the model
allowlist, control characters, sampling bounds, the num_predict cap, messages per request and
the body size cap.

Every refusal is checked three ways: the caller gets a clear status and message; nothing
reached Ollama (the simulator's own counters) and no conversation was stored; and the refusal
was audited (its row, found by the id the server gave it in `X-Request-ID`, appears in
/api/admin/audit, carrying the id the test sent as its `correlation_id`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.proxy_process import ProxyProcess, sim_stats
from tests.support.timing import scaled
from tests.support.tokens import admin_auth, auth

pytestmark = pytest.mark.usefixtures("sim")

MAX_BODY = 2048
NOT_ALLOWED = "model 'mistral' is not allowed on this proxy (allowed: llama3.2)"


@pytest.fixture(scope="module")
def proxy(proxy_factory, simulator, database_url: str) -> ProxyProcess:
    return proxy_factory(OLLAMA_URL=simulator.url, DATABASE_URL=database_url,
                         PROXY_MODEL_ALLOWLIST="llama3.2", PROXY_MAX_NUM_PREDICT="10",
                         PROXY_MAX_MESSAGES="3", PROXY_MAX_BODY_BYTES=str(MAX_BODY))


def upstream(sim) -> dict[str, int]:
    counts = sim_stats(sim)["requests"]
    return {path: int(counts.get(path, 0)) for path in ("/api/generate", "/api/chat")}


def last_sent(sim, path: str = "/api/generate") -> dict[str, Any]:
    body: dict[str, Any] = sim_stats(sim)["last_body"][path]
    return body


def new_correlation_id() -> str:
    return f"limits-{uuid.uuid4().hex[:16]}"


def post(proxy: ProxyProcess, path: str, body: Any,
         headers: dict[str, str] | None = None) -> httpx.Response:
    with proxy.client() as client:
        return client.post(path, json=body, headers={**auth(), **(headers or {})})


def generate_body(**fields: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "prompt": "hello", "stream": False, **fields}


def chat_body(messages: list[dict[str, str]], **fields: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "messages": messages, "stream": False, **fields}


def say(*texts: str) -> list[dict[str, str]]:
    roles = ["user", "assistant"]
    return [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)]


class Refusals:
    """Sends requests expected to be refused, and checks them; `audited()` checks the audit."""

    def __init__(self, proxy: ProxyProcess, sim) -> None:
        self.proxy = proxy
        self.sim = sim
        # The server's request id -> (expected status, the correlation id the test sent).
        self.expected: dict[str, tuple[int, str]] = {}
        self.conversations: list[str] = []

    def send(self, path: str, body: Any, status: int, *mentions: str,
             raw: bytes | Iterator[bytes] | None = None) -> httpx.Response:
        before = upstream(self.sim)
        correlation_id = new_correlation_id()
        headers = {**auth(), "X-Request-ID": correlation_id}
        with self.proxy.client() as client:
            if raw is not None:
                response = client.post(path, content=raw, headers=headers)
            else:
                response = client.post(path, json=body, headers=headers)
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

    def audited(self) -> None:
        """Every refusal has its audit row, with its status; no conversation was stored."""
        with self.proxy.client() as client:
            for context_id in self.conversations:
                response = client.get(f"/api/llm/conversations/{context_id}", headers=auth())
                assert response.status_code == 404, f"conversation {context_id} was stored"
            deadline = time.monotonic() + scaled(10)
            while True:
                found = {}
                for status in {status for status, _ in self.expected.values()}:
                    page = client.get("/api/admin/audit", headers=admin_auth(),
                                      params={"status": status, "limit": 500}).json()
                    found.update({e["id"]: e for e in page["entries"] if e["id"] in self.expected})
                if len(found) == len(self.expected) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        missing = sorted(set(self.expected) - set(found))
        assert missing == [], f"refusals without an audit row: {missing}"
        for request_id, (status, correlation_id) in self.expected.items():
            assert found[request_id]["status"] == status
            assert found[request_id]["correlation_id"] == correlation_id


@pytest.fixture
def refusals(proxy: ProxyProcess, sim) -> Iterator[Refusals]:
    checker = Refusals(proxy, sim)
    yield checker
    checker.audited()


# -- the model allowlist ------------------------------------------------------------------------


def test_models_outside_the_allowlist_are_refused(refusals: Refusals) -> None:
    for stream in (False, True):
        refusals.send("/api/llm/generate", generate_body(model="mistral", stream=stream), 403,
                      NOT_ALLOWED)
    refusals.send("/api/llm/chat", chat_body(say("hi"), model="mistral",
                                             context_id=uuid.uuid4().hex), 403, NOT_ALLOWED)
    for model in ("mistral:latest", "codellama:7b", "llama3.2:1b"):
        refusals.send("/api/llm/generate", generate_body(model=model), 403, f"'{model}'",
                      "allowed: llama3.2")


def test_allowed_models_work_under_either_spelling(proxy: ProxyProcess, sim) -> None:
    for model in ("llama3.2", "llama3.2:latest"):
        response = post(proxy, "/api/llm/generate", generate_body(model=model))
        assert response.status_code == 200, response.text
        assert last_sent(sim)["model"] == model
    assert upstream(sim)["/api/generate"] == 2


def test_model_list_shows_only_allowed_models(proxy: ProxyProcess) -> None:
    with proxy.client() as client:
        response = client.get("/api/llm/models", headers=auth())
    assert response.status_code == 200
    assert [m["name"] for m in response.json()["models"]] == ["llama3.2:latest"]


# -- control characters -------------------------------------------------------------------------


CONTROL = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"]


def test_control_characters_are_refused_wherever_text_goes(refusals: Refusals) -> None:
    for char in CONTROL:
        point = f"U+{ord(char):04X}"
        refusals.send("/api/llm/generate", generate_body(prompt=f"abc{char}def"), 422,
                      "prompt contains a control character", point, "position 3")
        refusals.send("/api/llm/generate", generate_body(system=f"{char}be brief"), 422,
                      "system contains a control character", point, "position 0")
        refusals.send("/api/llm/chat", chat_body(say("fine", "fine too", f"bad{char}"),
                                                 context_id=uuid.uuid4().hex), 422,
                      "messages[2].content contains a control character", point)


def test_tab_newline_and_carriage_return_are_accepted(proxy: ProxyProcess, sim) -> None:
    text = "line one\r\n\tline two\nline three\t"
    response = post(proxy, "/api/llm/generate",
                    generate_body(prompt=text, system="be\tbrief\r\n", options={"num_predict": 2}))
    assert response.status_code == 200, response.text
    sent = last_sent(sim)
    assert (sent["prompt"], sent["system"]) == (text, "be\tbrief\r\n")

    context_id = uuid.uuid4().hex
    chat = post(proxy, "/api/llm/chat", chat_body(say(text), context_id=context_id,
                                                  options={"num_predict": 2}))
    assert chat.status_code == 200, chat.text
    assert last_sent(sim, "/api/chat")["messages"] == [{"role": "user", "content": text}]
    with proxy.client() as client:
        stored = client.get(f"/api/llm/conversations/{context_id}", headers=auth()).json()
    assert stored["messages"][0]["content"] == text


# -- sampling bounds ----------------------------------------------------------------------------


def test_temperature_bounds(proxy: ProxyProcess, sim, refusals: Refusals) -> None:
    for temperature in (0, 0.0, 1.5, 2, 2.0):
        response = post(proxy, "/api/llm/generate",
                        generate_body(options={"temperature": temperature, "num_predict": 2}))
        assert response.status_code == 200, temperature
        assert last_sent(sim)["options"]["temperature"] == temperature
    for temperature in (2.01, -0.01, 100, "hot"):
        refusals.send("/api/llm/generate", generate_body(options={"temperature": temperature}),
                      422, "temperature")
    refusals.send("/api/llm/chat", chat_body(say("hi"), options={"temperature": 2.5}), 422,
                  "temperature")


def test_num_predict_is_capped_by_configuration(proxy: ProxyProcess, sim,
                                                refusals: Refusals) -> None:
    refusals.send("/api/llm/generate", generate_body(options={"num_predict": 11}), 422,
                  "num_predict must be at most 10", "PROXY_MAX_NUM_PREDICT")
    refusals.send("/api/llm/chat", chat_body(say("hi"), options={"num_predict": 4096},
                                             context_id=uuid.uuid4().hex), 422,
                  "num_predict must be at most 10")
    for options, sent in (({"num_predict": 10}, 10), ({"num_predict": 1}, 1), (None, 10),
                          ({}, 10), ({"num_predict": -1}, 10), ({"temperature": 0.5}, 10)):
        body = generate_body() if options is None else generate_body(options=options)
        response = post(proxy, "/api/llm/generate", body)
        assert response.status_code == 200, options
        assert last_sent(sim)["options"]["num_predict"] == sent, options
        assert response.json()["usage"]["completion_tokens"] <= 10
    chat = post(proxy, "/api/llm/chat", chat_body(say("hi")))
    assert chat.status_code == 200
    assert last_sent(sim, "/api/chat")["options"]["num_predict"] == 10


def test_messages_per_request_are_capped(proxy: ProxyProcess, sim, refusals: Refusals) -> None:
    three = post(proxy, "/api/llm/chat", chat_body(say("one", "two", "three")))
    assert three.status_code == 200, three.text
    assert len(last_sent(sim, "/api/chat")["messages"]) == 3
    refusals.send("/api/llm/chat", chat_body(say("one", "two", "three", "four"),
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


def test_bodies_over_the_cap_get_413(proxy: ProxyProcess, sim, refusals: Refusals) -> None:
    for size in (MAX_BODY, MAX_BODY - 100):
        with proxy.client() as client:
            response = client.post("/api/llm/generate", content=padded(size), headers=auth())
        assert response.status_code == 200, (size, response.text)
    assert upstream(sim)["/api/generate"] == 2
    for size in (MAX_BODY + 1, 10 * MAX_BODY):
        refusals.send("/api/llm/generate", None, 413, f"larger than {MAX_BODY} bytes",
                      "PROXY_MAX_BODY_BYTES", raw=padded(size))
    # Without a Content-Length the bytes are counted as they arrive.
    big = padded(3 * MAX_BODY)
    refusals.send("/api/llm/generate", None, 413, "PROXY_MAX_BODY_BYTES",
                  raw=iter([big[:1000], big[1000:]]))


def test_a_chunked_body_over_the_cap_is_never_acted_on(proxy: ProxyProcess, sim,
                                                        refusals: Refusals) -> None:
    """The first chunk alone is a complete, valid request; the body then grows past the cap.

    The proxy answers 413, so it must not have run the request: no generation upstream, no
    conversation stored.
    """
    context_id = uuid.uuid4().hex
    head = json.dumps(chat_body(say("store me"), context_id=context_id,
                                options={"num_predict": 2})).encode()
    assert len(head) < MAX_BODY

    def chunks() -> Iterator[bytes]:
        yield head
        # Not a wait for a condition: the pause makes the server receive the two chunks as two
        # separate reads, which is the case under test.
        time.sleep(0.3)
        yield b" " * MAX_BODY

    before = upstream(sim)
    correlation_id = new_correlation_id()
    with proxy.client() as client:
        response = client.post("/api/llm/chat", content=chunks(),
                               headers={**auth(), "X-Request-ID": correlation_id})
        assert response.status_code == 413
        refusals.expect(response, correlation_id)
        assert "PROXY_MAX_BODY_BYTES" in response.json()["error"]
        stored = client.get(f"/api/llm/conversations/{context_id}", headers=auth())
    sent = upstream(sim)["/api/chat"] - before["/api/chat"]
    assert (sent, stored.status_code) == (0, 404), (
        f"answered 413, yet {sent} generation(s) ran upstream and the conversation lookup "
        f"gave {stored.status_code}: {stored.text[:200]}")
