"""The response cache, in process: what is cached, what never is, expiry, sharing through Redis.

"Went upstream" is always read from the simulator's own request counter, never inferred from the
proxy's answer. Every test uses prompts of its own, so entries cached by one test cannot answer
another's requests.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import sim_stats
from tests.support.timing import scaled
from tests.support.tokens import auth

REDIS_DB = 11
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


@pytest.fixture(scope="module")
async def cache_proxy(make_proxy: MakeProxy) -> InProcessProxy:
    return await make_proxy()


def unique(text: str = "cache me") -> str:
    return f"{text} {uuid.uuid4().hex[:12]}"


def upstream_generates(sim) -> int:
    return int(sim_stats(sim)["requests"].get("/api/generate", 0))


def upstream_chats(sim) -> int:
    return int(sim_stats(sim)["requests"].get("/api/chat", 0))


async def generate(proxy: InProcessProxy, prompt: str, options: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None, user: str = "alice",
                   **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"model": "llama3.2", "prompt": prompt, "stream": False, **extra}
    if options is not None:
        body["options"] = options
    response = await proxy.client.post("/api/llm/generate",
                                       headers={**auth(user), **(headers or {})}, json=body)
    assert response.status_code == 200, response.text
    return response


def without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "request_id"}


async def cache_counts(proxy: InProcessProxy) -> dict[str, float]:
    text = (await proxy.client.get("/metrics")).text
    return {s.labels["result"]: s.value
            for family in text_string_to_metric_families(text)
            if family.name == "llm_proxy_cache_requests"
            for s in family.samples if s.name == "llm_proxy_cache_requests_total"}


DETERMINISTIC = [
    pytest.param({"temperature": 0, "num_predict": 6}, id="temperature-0"),
    pytest.param({"seed": 42, "num_predict": 6}, id="fixed-seed"),
    pytest.param({"seed": 0, "temperature": 0.9, "num_predict": 6}, id="seed-0"),
]


@pytest.mark.parametrize("options", DETERMINISTIC)
async def test_a_deterministic_request_is_answered_from_the_cache(cache_proxy: InProcessProxy,
                                                                  sim,
                                                                  options: dict[str, Any]) -> None:
    prompt = unique()
    first = await generate(cache_proxy, prompt, options)
    assert first.headers["x-cache"] == "MISS"
    assert upstream_generates(sim) == 1

    second = await generate(cache_proxy, prompt, options)
    assert second.headers["x-cache"] == "HIT"
    assert upstream_generates(sim) == 1, "a cache hit must not reach Ollama"
    assert without_request_id(second.json()) == without_request_id(first.json())
    assert second.json()["response"]
    assert second.json()["request_id"] == second.headers["x-request-id"]
    assert second.json()["request_id"] != first.json()["request_id"]


async def test_the_cache_is_per_user_by_default(cache_proxy: InProcessProxy, sim) -> None:
    prompt, options = unique(), {"temperature": 0, "num_predict": 5}
    alices = await generate(cache_proxy, prompt, options)
    assert alices.headers["x-cache"] == "MISS"
    bobs = await generate(cache_proxy, prompt, options, user="bob")
    assert bobs.headers["x-cache"] == "MISS", "bob was answered from alice's entry"
    assert upstream_generates(sim) == 2
    # Each has an entry of their own.
    assert (await generate(cache_proxy, prompt, options, user="bob")).headers["x-cache"] == "HIT"
    assert (await generate(cache_proxy, prompt, options)).headers["x-cache"] == "HIT"
    assert upstream_generates(sim) == 2


async def test_sharing_the_cache_across_users_is_an_explicit_setting(make_proxy: MakeProxy,
                                                                     sim) -> None:
    proxy = await make_proxy(proxy_cache_shared=True)
    prompt, options = unique(), {"seed": 9, "num_predict": 5}
    first = await generate(proxy, prompt, options)
    assert first.headers["x-cache"] == "MISS"
    shared = await generate(proxy, prompt, options, user="bob")
    assert shared.headers["x-cache"] == "HIT"
    assert without_request_id(shared.json()) == without_request_id(first.json())
    assert upstream_generates(sim) == 1


async def test_cache_can_be_bypassed_by_the_caller(cache_proxy: InProcessProxy, sim) -> None:
    prompt, options = unique(), {"temperature": 0, "num_predict": 4}
    assert (await generate(cache_proxy, prompt, options)).headers["x-cache"] == "MISS"
    assert upstream_generates(sim) == 1
    for headers in ({"Cache-Control": "no-cache"}, {"X-Cache-Bypass": "1"},
                    {"Cache-Control": "max-age=0, no-cache"}):
        response = await generate(cache_proxy, prompt, options, headers=headers)
        assert "x-cache" not in response.headers, headers
    assert upstream_generates(sim) == 4
    # Bypassing does not evict: the entry is still there for ordinary callers.
    assert (await generate(cache_proxy, prompt, options)).headers["x-cache"] == "HIT"
    assert upstream_generates(sim) == 4


@pytest.mark.parametrize("options", [
    pytest.param(None, id="no-options"),
    pytest.param({"num_predict": 4}, id="temperature-unset"),
    pytest.param({"temperature": 0.7, "num_predict": 4}, id="temperature-0.7"),
    pytest.param({"seed": -1, "num_predict": 4}, id="seed-minus-1"),
])
async def test_a_non_deterministic_request_is_never_cached(cache_proxy: InProcessProxy, sim,
                                                           options: dict[str, Any] | None
                                                           ) -> None:
    prompt = unique()
    for _ in range(3):
        assert "x-cache" not in (await generate(cache_proxy, prompt, options)).headers
    assert upstream_generates(sim) == 3


async def test_streams_are_never_cached(cache_proxy: InProcessProxy, sim) -> None:
    prompt, options = unique(), {"temperature": 0, "num_predict": 4}
    for _ in range(2):
        streamed = await generate(cache_proxy, prompt, options, stream=True)
        assert "x-cache" not in streamed.headers
        assert streamed.headers["content-type"].startswith("application/x-ndjson")
    assert upstream_generates(sim) == 2
    # Nor is a stream answered from what a non-streamed request put in the cache.
    assert (await generate(cache_proxy, prompt, options)).headers["x-cache"] == "MISS"
    streamed = await generate(cache_proxy, prompt, options, stream=True)
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    assert upstream_generates(sim) == 4


async def test_anything_that_changes_the_answer_changes_the_key(cache_proxy: InProcessProxy,
                                                                sim) -> None:
    prompt = unique()
    base: dict[str, Any] = {"seed": 1, "num_predict": 5}
    variants: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("base", prompt, base, {}),
        ("seed", prompt, {**base, "seed": 2}, {}),
        ("num_predict", prompt, {**base, "num_predict": 6}, {}),
        ("top_k", prompt, {**base, "top_k": 10}, {}),
        ("stop", prompt, {**base, "stop": ["zzz"]}, {}),
        ("system", prompt, base, {"system": "be terse"}),
        ("model", prompt, base, {"model": "mistral"}),
        ("prompt", prompt + "!", base, {}),
    ]
    bodies = []
    for name, text, options, extra in variants:
        response = await generate(cache_proxy, text, options, **extra)
        assert response.headers["x-cache"] == "MISS", name
        bodies.append(response.json())
    assert upstream_generates(sim) == len(variants)
    # ...and the same again is a hit for every one of them.
    for (name, text, options, extra), body in zip(variants, bodies, strict=True):
        response = await generate(cache_proxy, text, options, **extra)
        assert response.headers["x-cache"] == "HIT", name
        assert without_request_id(response.json()) == without_request_id(body), name
    assert upstream_generates(sim) == len(variants)


async def test_chat_is_cached_without_context_id_but_never_with_one(cache_proxy: InProcessProxy,
                                                                     sim) -> None:
    messages = [{"role": "user", "content": unique()}]
    body = {"model": "llama3.2", "messages": messages, "stream": False,
            "options": {"temperature": 0, "num_predict": 4}}
    client = cache_proxy.client
    first = await client.post("/api/llm/chat", headers=auth(), json=body)
    second = await client.post("/api/llm/chat", headers=auth(), json=body)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert without_request_id(first.json()) == without_request_id(second.json())
    assert upstream_chats(sim) == 1

    context_id = uuid.uuid4().hex
    for _ in range(2):
        stored = await client.post("/api/llm/chat", headers=auth(),
                                   json={**body, "context_id": context_id})
        assert stored.status_code == 200
        assert "x-cache" not in stored.headers
    assert upstream_chats(sim) == 3
    detail = (await client.get(f"/api/llm/conversations/{context_id}", headers=auth())).json()
    # Both turns were really stored: a cached answer would have skipped the history.
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"] * 2


async def test_cache_hits_and_misses_are_counted(cache_proxy: InProcessProxy, sim) -> None:
    before = await cache_counts(cache_proxy)
    prompt, options = unique(), {"temperature": 0, "num_predict": 3}
    await generate(cache_proxy, prompt, options)
    await generate(cache_proxy, prompt, options)
    await generate(cache_proxy, prompt, options)
    await generate(cache_proxy, unique(), {"num_predict": 3})  # not cacheable: no lookup at all
    after = await cache_counts(cache_proxy)
    assert after.get("miss", 0) - before.get("miss", 0) == 1
    assert after.get("hit", 0) - before.get("hit", 0) == 2


async def test_ttl_zero_disables_the_cache(make_proxy: MakeProxy, sim) -> None:
    proxy = await make_proxy(proxy_cache_ttl_seconds=0)
    prompt, options = unique(), {"temperature": 0, "num_predict": 3}
    for _ in range(3):
        assert "x-cache" not in (await generate(proxy, prompt, options)).headers
    assert upstream_generates(sim) == 3
    assert await cache_counts(proxy) == {}


async def test_entries_expire_after_the_ttl(make_proxy: MakeProxy, sim) -> None:
    proxy = await make_proxy(proxy_cache_ttl_seconds=1)
    prompt, options = unique(), {"temperature": 0, "num_predict": 3}
    assert (await generate(proxy, prompt, options)).headers["x-cache"] == "MISS"
    stored_at = time.monotonic()
    assert (await generate(proxy, prompt, options)).headers["x-cache"] == "HIT"
    assert upstream_generates(sim) == 1
    deadline = stored_at + scaled(5)
    while True:
        response = await generate(proxy, prompt, options)
        if response.headers["x-cache"] == "MISS":
            break
        assert time.monotonic() < deadline, "the entry outlived its TTL"
        await asyncio.sleep(0.1)
    # A hit is never served after the TTL, and a miss never comes well before it.
    assert time.monotonic() - stored_at >= 0.9
    assert upstream_generates(sim) == 2


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


async def test_replicas_on_one_redis_share_the_cache(make_proxy: MakeProxy, sim,
                                                     redis_db: redis.Redis) -> None:
    # Two apps, each with its own Redis client: what one stores, the other finds.
    first = await make_proxy(redis_url=REDIS_URL, proxy_cache_ttl_seconds=30)
    second = await make_proxy(redis_url=REDIS_URL, proxy_cache_ttl_seconds=30)
    prompt, options = unique(), {"seed": 5, "num_predict": 4}
    miss = await generate(first, prompt, options)
    assert miss.headers["x-cache"] == "MISS"
    hit = await generate(second, prompt, options)
    assert hit.headers["x-cache"] == "HIT"
    assert without_request_id(hit.json()) == without_request_id(miss.json())
    assert upstream_generates(sim) == 1

    keys = [k.decode() for k in redis_db.scan_iter("llm-proxy:cache:*")]
    assert len(keys) == 1
    assert 0 < redis_db.ttl(keys[0]) <= 30
    stored = json.loads(redis_db.get(keys[0]))
    assert stored["text"] == miss.json()["response"]
    assert await cache_counts(second) == {"hit": 1}
