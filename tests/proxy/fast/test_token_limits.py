"""Token limits, in process: which windows a caller is held to (user, role and global settings,
an API key's own), a request refused with its reset once a window is spent, and a stream that
runs past a limit stopped with the error of the dialect it was asked in; in memory and through
the real Redis. (Twenty streams on two replicas, with real sockets:
tests/proxy/test_token_limits.py.)
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from proxy.core.security import KeyGrant, Principal
from proxy.core.settings import TokenLimits
from proxy.core.token_limits import TokenWindow, token_windows
from tests.support.proxy_app import MakeProxy, proxy_settings
from tests.support.tokens import admin_auth, auth

pytestmark = pytest.mark.usefixtures("long_replies")

REDIS = "redis://127.0.0.1:6379/0"
EVERY = 4


@pytest.fixture
def long_replies(sim) -> None:
    # Replies longer than any limit here, so that every limit is reached mid-answer.
    sim.configure(reply_tokens=200)


def fresh_user() -> str:
    # Redis keeps windows between runs; a new user starts with empty ones.
    return f"tokens-{uuid.uuid4().hex[:10]}"


def test_a_user_override_beats_the_role_which_beats_the_global_value(tmp_path) -> None:
    settings = proxy_settings(
        tmp_path, proxy_token_limit_per_minute=100, proxy_token_limit_per_day=1000,
        proxy_token_limit_roles={"admin": TokenLimits(per_minute=0)},
        proxy_token_limit_users={"ann": TokenLimits(per_day=50)})
    admin = Principal("root", "admin", {})
    assert token_windows(settings, admin) == [TokenWindow("user", "root", "day", 1000)]
    assert token_windows(settings, Principal("ann", "user", {})) == [
        TokenWindow("user", "ann", "minute", 100), TokenWindow("user", "ann", "day", 50)]
    keyed = Principal("bob", "user", {}, key=KeyGrant("k1", token_limit_per_minute=7))
    assert token_windows(settings, keyed)[-1] == TokenWindow("key", "k1", "minute", 7)


def test_a_window_resets_at_the_next_utc_minute_or_day() -> None:
    at = 1_700_000_040 + 30.5  # 30.5 s into a minute
    assert TokenWindow("user", "u", "minute", 1).resets_at(at) == 1_700_000_100
    assert TokenWindow("user", "u", "day", 1).resets_at(at) % 86_400 == 0


@pytest.fixture(scope="module", params=["memory", "redis"])
async def limited(request: pytest.FixtureRequest, make_proxy: MakeProxy):
    settings: dict[str, Any] = {"proxy_token_limit_per_minute": 40,
                                "proxy_token_count_every": EVERY, "proxy_rate_limit": "1000/minute",
                                "proxy_concurrency_limit": 10}
    if request.param == "redis":
        settings["redis_url"] = REDIS
    return await make_proxy(**settings)


def generate_body(tokens: int, stream: bool) -> dict[str, Any]:
    return {"model": "llama3.2", "prompt": "hi", "stream": stream,
            "options": {"num_predict": tokens}}


async def test_a_spent_window_refuses_with_its_reset(limited) -> None:
    user = fresh_user()
    first = await limited.client.post("/api/llm/generate", headers=auth(user),
                                      json=generate_body(30, False))
    assert first.status_code == 200, first.text
    # 30 generated and the prompt's: 10 or fewer left. A non-streamed answer is asked of the
    # engine whole and counted when it has come: it is delivered (the documented overshoot),
    # and the window is then spent.
    over = await limited.client.post("/api/llm/generate", headers=auth(user),
                                     json=generate_body(30, False))
    assert over.status_code == 200, over.text
    refused = await limited.client.post("/api/llm/generate", headers=auth(user),
                                        json=generate_body(1, False))
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error.startswith("token limit reached: 40 tokens per minute; it resets at ")
    wait = int(refused.headers["Retry-After"])
    assert 1 <= wait <= 60
    assert int(refused.headers["X-Quota-Reset"]) - time.time() <= 60
    assert (await limited.client.post("/api/llm/generate", headers=auth(fresh_user()),
                                      json=generate_body(1, False))).status_code == 200
    assert await limited.metric("llm_proxy_rate_limited_total", limit="tokens") >= 1


# A stream asked in each dialect: (path, body, how its lines are read, its error frame).
def _ndjson(body: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def _sse(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: "):]) for line in body.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


STREAMS = {
    "llm": ("/api/llm/generate", generate_body(200, True), _ndjson),
    "openai": ("/v1/chat/completions", {"model": "llama3.2", "stream": True, "max_tokens": 200,
                                        "messages": [{"role": "user", "content": "hi"}]}, _sse),
    "ollama": ("/ollama/api/generate", generate_body(200, True), _ndjson),
}


@pytest.mark.parametrize("dialect", STREAMS)
async def test_a_stream_past_the_limit_ends_with_the_dialects_error(limited, dialect) -> None:
    path, body, frames_of = STREAMS[dialect]
    response = await limited.client.post(path, headers=auth(fresh_user()), json=body)
    assert response.status_code == 200
    frames = frames_of(response.text)
    last = frames[-1]
    message = "token limit reached: 40 tokens per minute; it resets at "
    if dialect == "llm":
        assert last["status"] == 429 and last["done"] is True
        assert last["error"].startswith(message)
    elif dialect == "openai":
        assert last["error"]["code"] == "token_limit_exceeded"
        assert last["error"]["message"].startswith(message)
    else:
        assert last["error"].startswith(message)
    pieces = len(frames) - 1 - (dialect == "openai")  # the openai stream opens with the role
    # Every addition let through fits in the limit; past it, a stream sends at most the
    # chunks it had not counted yet.
    assert 40 - EVERY < pieces <= 40 + EVERY - 1


async def test_an_api_key_is_held_to_its_own_token_limit(limited) -> None:
    owner = fresh_user()
    created = await limited.client.post(
        "/api/admin/keys", headers=admin_auth(),
        json={"name": "small", "owner": owner, "token_limit_per_minute": 12})
    assert created.status_code == 201, created.text
    assert created.json()["token_limit_per_minute"] == 12
    key = {"Authorization": f"Bearer {created.json()['secret']}"}
    # Counted when it has come (non-streamed): delivered, and the key's window is spent.
    over = await limited.client.post("/api/llm/generate", headers=key,
                                     json=generate_body(30, False))
    assert over.status_code == 200, over.text
    stopped = await limited.client.post("/api/llm/generate", headers=key,
                                        json=generate_body(1, False))
    assert stopped.status_code == 429
    assert "token limit reached for this API key: 12 tokens per minute" in stopped.json()["error"]
    # The owner's own window (40) still has room.
    assert (await limited.client.post("/api/llm/generate", headers=auth(owner),
                                      json=generate_body(5, False))).status_code == 200
