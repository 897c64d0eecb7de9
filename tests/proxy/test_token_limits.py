"""Token limits with real sockets: twenty streams from one API key, on two proxy replicas that
share the real Postgres and Redis, under a limit of 1000 tokens a minute, overshoot it by no
more than the documented bound (PROXY_TOKEN_COUNT_EVERY - 1 chunks per concurrent stream), and
each is stopped with the proxy's error line. (Windows, dialects and refusals in process:
tests/proxy/fast/test_token_limits.py.)"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.proxy_process import ProxyProcess
from tests.support.timing import scaled
from tests.support.tokens import admin_auth

pytestmark = pytest.mark.postgres

REDIS = "redis://127.0.0.1:6379/0"
LIMIT = 1000
STREAMS = 20
EVERY = 8
# What the proxy documents: past the limit, each stream sends at most the chunks it has not
# counted yet.
BOUND = STREAMS * (EVERY - 1)


def stream_tokens(proxy: ProxyProcess, secret: str, start: threading.Barrier
                  ) -> tuple[int, dict[str, object] | None]:
    """Open a stream once every thread is ready; the chunks of text it got, and its last line
    (None if it was refused before it started)."""
    start.wait()
    with httpx.Client(base_url=proxy.url, timeout=scaled(60)) as client, client.stream(
            "POST", "/api/llm/generate", headers={"Authorization": f"Bearer {secret}"},
            json={"model": "llama3.2", "prompt": "go", "options": {"num_predict": 400}}
    ) as response:
        if response.status_code == 429:
            return 0, None
        assert response.status_code == 200, response.read()
        lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
    text = [line for line in lines if line.get("response") and not line.get("done")]
    return len(text), lines[-1]


def test_twenty_streams_of_one_key_on_two_replicas_overshoot_by_the_bound_at_most(
        proxy_factory, simulator, sim, postgres_url: str) -> None:
    sim.configure(reply_tokens=400, tokens_per_second=400, num_parallel=STREAMS)
    env = {"OLLAMA_URL": simulator.url, "REDIS_URL": REDIS, "DATABASE_URL": postgres_url,
           "PROXY_RATE_LIMIT": "1000/minute", "PROXY_CONCURRENCY_LIMIT": "100",
           "PROXY_TOKEN_COUNT_EVERY": str(EVERY)}
    replicas = [proxy_factory(**env), proxy_factory(**env)]
    with replicas[0].client() as client:
        created = client.post("/api/admin/keys", headers=admin_auth(), json={
            "name": "parallel", "owner": "streamer", "token_limit_per_minute": LIMIT})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]

    start = threading.Barrier(STREAMS)
    first_window = time.time() // 60
    with ThreadPoolExecutor(max_workers=STREAMS) as pool:
        results = list(pool.map(lambda i: stream_tokens(replicas[i % 2], secret, start),
                                range(STREAMS)))
    windows = int(time.time() // 60 - first_window) + 1  # a minute may turn meanwhile

    delivered = sum(count for count, _ in results)
    stopped = [last for _, last in results if last is not None and last.get("status") == 429]
    print(f"{delivered} tokens sent by {STREAMS} streams under {LIMIT}/minute "
          f"({windows} window(s)); overshoot {delivered - LIMIT * windows}, bound {BOUND}")
    assert delivered <= windows * (LIMIT + BOUND)
    assert delivered > LIMIT - STREAMS * EVERY  # the limit was reached, not missed
    # Every stream that started ended with the proxy's error line, none was cut silently.
    assert len(stopped) == sum(1 for _, last in results if last is not None)
    assert all(str(last["error"]).startswith(
        f"token limit reached for this API key: {LIMIT} tokens per minute") for last in stopped)
