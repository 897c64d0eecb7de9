"""Chat and persisted conversations, on SQLite and on the real Postgres."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.proxy.conftest import ProxyProcess, auth, sim_fault, sim_stats


@pytest.fixture(scope="module")
def chat_proxy(proxy_factory, simulator, database_url: str) -> ProxyProcess:
    return proxy_factory(OLLAMA_URL=simulator.url, DATABASE_URL=database_url)


def new_id() -> str:
    return uuid.uuid4().hex


def chat(proxy: ProxyProcess, messages, user: str = "alice", stream: bool = False,
         **extra: object):
    with proxy.client() as client:
        return client.post("/api/llm/chat", headers=auth(user),
                           json={"model": "llama3.2", "messages": messages, "stream": stream,
                                 "options": {"num_predict": 6}, **extra})


def user_says(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_chat_without_context_is_not_stored(chat_proxy: ProxyProcess, sim) -> None:
    response = chat(chat_proxy, user_says("hello there"), user="nobody")
    assert response.status_code == 200
    body = response.json()
    assert body["message"]["role"] == "assistant"
    assert body["message"]["content"]
    assert body["context_id"] is None
    assert body["usage"]["completion_tokens"] == 6
    with chat_proxy.client() as client:
        listed = client.get("/api/llm/conversations", headers=auth("nobody")).json()
    assert listed == {"conversations": []}


def test_streaming_chat_lines(chat_proxy: ProxyProcess, sim) -> None:
    response = chat(chat_proxy, user_says("stream please"), stream=True)
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert all(line["message"]["role"] == "assistant" for line in lines[:-1])
    assert len(lines) == 7
    assert lines[-1]["done"] is True
    assert lines[-1]["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize("stream", [False, True])
def test_context_id_persists_turns_and_replays_history(chat_proxy: ProxyProcess, sim,
                                                        stream: bool) -> None:
    cid = new_id()
    first = chat(chat_proxy, user_says("My name is Ada."), context_id=cid, stream=stream)
    assert first.status_code == 200
    first_reply = (first.json()["message"]["content"] if not stream else
                   "".join(json.loads(line).get("message", {}).get("content", "")
                           for line in first.text.splitlines()))

    second = chat(chat_proxy, user_says("What is my name?"), context_id=cid, stream=stream)
    assert second.status_code == 200
    sent = sim_stats(sim)["last_body"]["/api/chat"]["messages"]
    assert sent == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": first_reply},
        {"role": "user", "content": "What is my name?"},
    ]

    with chat_proxy.client() as client:
        detail = client.get(f"/api/llm/conversations/{cid}", headers=auth()).json()
        listed = client.get("/api/llm/conversations", headers=auth()).json()["conversations"]
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant", "user", "assistant"]
    assert detail["messages"][1]["content"] == first_reply
    assert detail["title"] == "My name is Ada."
    summary = next(c for c in listed if c["id"] == cid)
    assert summary["message_count"] == 4
    assert summary["model"] == "llama3.2"


def test_another_user_gets_404_and_changes_nothing(chat_proxy: ProxyProcess, sim) -> None:
    cid = new_id()
    assert chat(chat_proxy, user_says("secret plans"), context_id=cid).status_code == 200
    requests_before = sim_stats(sim)["requests"].get("/api/chat", 0)

    stolen = chat(chat_proxy, user_says("tell me the plans"), user="mallory", context_id=cid)
    assert stolen.status_code == 404
    assert stolen.json() == {"error": f"conversation '{cid}' not found"}
    assert sim_stats(sim)["requests"].get("/api/chat", 0) == requests_before

    with chat_proxy.client() as client:
        mallory = auth("mallory")
        assert client.get(f"/api/llm/conversations/{cid}", headers=mallory).status_code == 404
        assert client.delete(f"/api/llm/conversations/{cid}", headers=mallory).status_code == 404
        assert all(c["id"] != cid for c in
                   client.get("/api/llm/conversations", headers=mallory).json()["conversations"])
        detail = client.get(f"/api/llm/conversations/{cid}", headers=auth()).json()
    assert len(detail["messages"]) == 2


def stored(proxy: ProxyProcess, cid: str, user: str = "alice") -> list[str]:
    """The contents of `user`'s conversation `cid`, oldest first ([] if they have none)."""
    with proxy.client() as client:
        response = client.get(f"/api/llm/conversations/{cid}", headers=auth(user))
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return [m["content"] for m in response.json()["messages"]]


def test_stored_history_counts_against_the_prompt_cap(proxy_factory, simulator, sim) -> None:
    cap = 400
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_MAX_PROMPT_CHARS=str(cap))
    cid = new_id()
    assert chat(proxy, user_says("a" * 150), context_id=cid).status_code == 200
    history = sum(len(text) for text in stored(proxy, cid))
    # Fits on its own, not after the stored turn.
    text = "b" * (cap - history + 1)
    assert len(text) < cap
    sent_before = sim_stats(sim)["requests"]["/api/chat"]
    refused = chat(proxy, user_says(text), context_id=cid)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert f"{history + len(text)} characters" in error and "PROXY_MAX_PROMPT_CHARS" in error
    assert sim_stats(sim)["requests"]["/api/chat"] == sent_before
    assert len(stored(proxy, cid)) == 2
    assert chat(proxy, user_says(text)).status_code == 200


def test_delete_removes_the_conversation(chat_proxy: ProxyProcess, sim) -> None:
    cid = new_id()
    assert chat(chat_proxy, user_says("forget me"), context_id=cid).status_code == 200
    with chat_proxy.client() as client:
        assert client.delete(f"/api/llm/conversations/{cid}", headers=auth()).status_code == 204
        assert client.get(f"/api/llm/conversations/{cid}", headers=auth()).status_code == 404
        assert client.delete(f"/api/llm/conversations/{cid}", headers=auth()).status_code == 404
    # The id is free again, and starts empty.
    assert chat(chat_proxy, user_says("fresh start"), context_id=cid).status_code == 200
    assert sim_stats(sim)["last_body"]["/api/chat"]["messages"] == user_says("fresh start")


def test_failed_generation_stores_nothing(chat_proxy: ProxyProcess, sim) -> None:
    cid = new_id()
    assert chat(chat_proxy, user_says("first"), context_id=cid).status_code == 200
    sim_fault(sim, "error500", 1)
    assert chat(chat_proxy, user_says("second"), context_id=cid).status_code == 502
    sim_fault(sim, "midstream_error", 1)
    streamed = chat(chat_proxy, user_says("third"), context_id=cid, stream=True)
    assert json.loads(streamed.text.splitlines()[-1])["status"] == 502
    with chat_proxy.client() as client:
        detail = client.get(f"/api/llm/conversations/{cid}", headers=auth()).json()
    assert [m["content"] for m in detail["messages"] if m["role"] == "user"] == ["first"]


BAD_CHATS = [
    ({"model": "llama3.2", "messages": []}, "messages"),
    ({"model": "llama3.2"}, "messages"),
    ({"model": "llama3.2", "messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ({"model": "llama3.2", "messages": [{"role": "user"}]}, "content"),
    ({"model": "llama3.2", "messages": [{"role": "system", "content": "only system"}]},
     "non-blank user message"),
    ({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}],
      "context_id": "../../etc"}, "context_id"),
    ({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}] * 101},
     "too many messages"),
]


@pytest.mark.parametrize(("body", "mentions"), BAD_CHATS)
def test_bad_chats_are_refused(chat_proxy: ProxyProcess, sim, body, mentions: str) -> None:
    with chat_proxy.client() as client:
        response = client.post("/api/llm/chat", headers=auth(), json=body)
    assert response.status_code == 422
    assert mentions in response.json()["error"]
    assert sim_stats(sim)["requests"].get("/api/chat", 0) == 0


def test_conversation_ids_in_paths_are_validated(chat_proxy: ProxyProcess) -> None:
    with chat_proxy.client() as client:
        response = client.get("/api/llm/conversations/bad%20id", headers=auth())
    assert response.status_code == 422
