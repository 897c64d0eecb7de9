"""Chat and persisted conversations, in process, on SQLite and on the real Postgres."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from proxy.schemas import CONTEXT_ID_PATTERN
from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import sim_fault, sim_stats
from tests.support.tokens import auth


@pytest.fixture(scope="module")
async def chat_proxy(make_proxy: MakeProxy, database_url: str) -> InProcessProxy:
    return await make_proxy(database_url=database_url)


def new_id() -> str:
    return uuid.uuid4().hex


async def chat(proxy: InProcessProxy, messages, user: str = "alice", stream: bool = False,
               **extra: object):
    return await proxy.client.post("/api/llm/chat", headers=auth(user),
                                   json={"model": "llama3.2", "messages": messages,
                                         "stream": stream, "options": {"num_predict": 6},
                                         **extra})


def user_says(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_chat_without_context_is_not_stored(chat_proxy: InProcessProxy, sim) -> None:
    response = await chat(chat_proxy, user_says("hello there"), user="nobody")
    assert response.status_code == 200
    body = response.json()
    assert body["message"]["role"] == "assistant"
    assert body["message"]["content"]
    assert body["context_id"] is None
    assert body["usage"]["completion_tokens"] == 6
    listed = (await chat_proxy.client.get("/api/llm/conversations", headers=auth("nobody"))).json()
    assert listed == {"conversations": []}


async def test_streaming_chat_lines(chat_proxy: InProcessProxy, sim) -> None:
    response = await chat(chat_proxy, user_says("stream please"), stream=True)
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert all(line["message"]["role"] == "assistant" for line in lines[:-1])
    assert len(lines) == 7
    assert lines[-1]["done"] is True
    assert lines[-1]["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize("stream", [False, True])
async def test_context_id_persists_turns_and_replays_history(chat_proxy: InProcessProxy, sim,
                                                        stream: bool) -> None:
    cid = new_id()
    first = await chat(chat_proxy, user_says("My name is Ada."), context_id=cid, stream=stream)
    assert first.status_code == 200
    first_reply = (first.json()["message"]["content"] if not stream else
                   "".join(json.loads(line).get("message", {}).get("content", "")
                           for line in first.text.splitlines()))

    second = await chat(chat_proxy, user_says("What is my name?"), context_id=cid, stream=stream)
    assert second.status_code == 200
    sent = sim_stats(sim)["last_body"]["/api/chat"]["messages"]
    assert sent == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": first_reply},
        {"role": "user", "content": "What is my name?"},
    ]

    client = chat_proxy.client
    detail = (await client.get(f"/api/llm/conversations/{cid}", headers=auth())).json()
    listed = (await client.get("/api/llm/conversations", headers=auth())).json()["conversations"]
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant", "user", "assistant"]
    assert detail["messages"][1]["content"] == first_reply
    assert detail["title"] == "My name is Ada."
    summary = next(c for c in listed if c["id"] == cid)
    assert summary["message_count"] == 4
    assert summary["model"] == "llama3.2"


async def stored(proxy: InProcessProxy, cid: str, user: str = "alice") -> list[str]:
    """The contents of `user`'s conversation `cid`, oldest first ([] if they have none)."""
    response = await proxy.client.get(f"/api/llm/conversations/{cid}", headers=auth(user))
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return [m["content"] for m in response.json()["messages"]]


async def test_another_users_id_reveals_nothing(chat_proxy: InProcessProxy, sim) -> None:
    """A caller's id names a conversation in the caller's own space only: using someone else's
    id gives exactly what a free id gives, and never touches their conversation."""
    cid = new_id()
    assert (await chat(chat_proxy, user_says("secret plans"), context_id=cid)).status_code == 200
    alices = await stored(chat_proxy, cid)
    assert alices[0] == "secret plans"

    taken = await chat(chat_proxy, user_says("tell me the plans"), user="mallory", context_id=cid)
    assert taken.status_code == 200, taken.text
    assert sim_stats(sim)["last_body"]["/api/chat"]["messages"] == user_says("tell me the plans")
    free = await chat(chat_proxy, user_says("tell me the plans"), user="mallory",
                      context_id=new_id())
    assert free.status_code == 200, free.text
    assert taken.json().keys() == free.json().keys()

    assert (await stored(chat_proxy, cid, "mallory"))[0] == "tell me the plans"
    assert await stored(chat_proxy, cid) == alices
    assert (await chat_proxy.client.delete(f"/api/llm/conversations/{cid}",
                                           headers=auth("mallory"))).status_code == 204
    assert await stored(chat_proxy, cid, "mallory") == []
    assert await stored(chat_proxy, cid) == alices


async def test_an_id_cannot_be_squatted(chat_proxy: InProcessProxy, sim) -> None:
    cid = new_id()
    assert (await chat(chat_proxy, user_says("I was here first"), user="mallory",
                context_id=cid)).status_code == 200
    mine = await chat(chat_proxy, user_says("hello"), context_id=cid)
    assert mine.status_code == 200, mine.text
    assert mine.json()["context_id"] == cid
    assert sim_stats(sim)["last_body"]["/api/chat"]["messages"] == user_says("hello")
    assert (await stored(chat_proxy, cid))[0] == "hello"
    assert (await stored(chat_proxy, cid, "mallory"))[0] == "I was here first"
    mine_listed = (await chat_proxy.client.get("/api/llm/conversations", headers=auth())).json()
    assert [c["title"] for c in mine_listed["conversations"] if c["id"] == cid] == ["hello"]


async def test_the_rate_limit_comes_before_the_conversation_lookup(make_proxy: MakeProxy,
                                                                   sim) -> None:
    proxy = await make_proxy(proxy_rate_limit_users={"mallory": "1/minute"})
    alices = new_id()
    assert (await chat(proxy, user_says("mine"), context_id=alices)).status_code == 200
    assert (await chat(proxy, user_says("my one request"), user="mallory")).status_code == 200
    for cid in (alices, new_id()):
        refused = await chat(proxy, user_says("probe"), user="mallory", context_id=cid)
        assert refused.status_code == 429, (cid, refused.text)
        assert "rate limit exceeded" in refused.json()["error"]
    assert sim_stats(sim)["requests"]["/api/chat"] == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_the_server_makes_an_unguessable_id_when_asked_to_store(
        chat_proxy: InProcessProxy, sim, stream: bool) -> None:
    def context_of(response) -> str:
        assert response.status_code == 200, response.text
        final = json.loads(response.text.splitlines()[-1]) if stream else response.json()
        return str(final["context_id"])

    first = context_of(await chat(chat_proxy, user_says("remember 42"), store=True, stream=stream))
    second = context_of(await chat(chat_proxy, user_says("remember 43"), store=True, stream=stream))
    assert first != second
    for made in (first, second):
        assert re.fullmatch(CONTEXT_ID_PATTERN, made)
        assert len(made) >= 32, f"{made!r} is too short to be unguessable"
    assert context_of(await chat(chat_proxy, user_says("which number?"), context_id=first,
                           stream=stream)) == first
    sent = sim_stats(sim)["last_body"]["/api/chat"]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["remember 42", "which number?"]
    assert len(await stored(chat_proxy, first)) == 4


async def test_stored_history_counts_against_the_prompt_cap(make_proxy: MakeProxy, sim) -> None:
    cap = 400
    proxy = await make_proxy(proxy_max_prompt_chars=cap)
    cid = new_id()
    assert (await chat(proxy, user_says("a" * 150), context_id=cid)).status_code == 200
    history = sum(len(text) for text in await stored(proxy, cid))
    # Fits on its own, not after the stored turn.
    text = "b" * (cap - history + 1)
    assert len(text) < cap
    sent_before = sim_stats(sim)["requests"]["/api/chat"]
    refused = await chat(proxy, user_says(text), context_id=cid)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert f"{history + len(text)} characters" in error and "PROXY_MAX_PROMPT_CHARS" in error
    assert sim_stats(sim)["requests"]["/api/chat"] == sent_before
    assert len(await stored(proxy, cid)) == 2
    assert (await chat(proxy, user_says(text))).status_code == 200


async def test_delete_removes_the_conversation(chat_proxy: InProcessProxy, sim) -> None:
    cid = new_id()
    assert (await chat(chat_proxy, user_says("forget me"), context_id=cid)).status_code == 200
    client = chat_proxy.client
    assert (await client.delete(f"/api/llm/conversations/{cid}", headers=auth())
            ).status_code == 204
    assert (await client.get(f"/api/llm/conversations/{cid}", headers=auth())).status_code == 404
    assert (await client.delete(f"/api/llm/conversations/{cid}", headers=auth())
            ).status_code == 404
    # The id is free again, and starts empty.
    assert (await chat(chat_proxy, user_says("fresh start"), context_id=cid)).status_code == 200
    assert sim_stats(sim)["last_body"]["/api/chat"]["messages"] == user_says("fresh start")


async def test_failed_generation_stores_nothing(chat_proxy: InProcessProxy, sim) -> None:
    cid = new_id()
    assert (await chat(chat_proxy, user_says("first"), context_id=cid)).status_code == 200
    sim_fault(sim, "error500", 1)
    assert (await chat(chat_proxy, user_says("second"), context_id=cid)).status_code == 502
    sim_fault(sim, "midstream_error", 1)
    streamed = await chat(chat_proxy, user_says("third"), context_id=cid, stream=True)
    assert json.loads(streamed.text.splitlines()[-1])["status"] == 502
    detail = (await chat_proxy.client.get(f"/api/llm/conversations/{cid}", headers=auth())).json()
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
async def test_bad_chats_are_refused(chat_proxy: InProcessProxy, sim, body, mentions: str) -> None:
    response = await chat_proxy.client.post("/api/llm/chat", headers=auth(), json=body)
    assert response.status_code == 422
    assert mentions in response.json()["error"]
    assert sim_stats(sim)["requests"].get("/api/chat", 0) == 0


async def test_conversation_ids_in_paths_are_validated(chat_proxy: InProcessProxy) -> None:
    response = await chat_proxy.client.get("/api/llm/conversations/bad%20id", headers=auth())
    assert response.status_code == 422
