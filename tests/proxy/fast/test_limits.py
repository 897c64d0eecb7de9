"""Rate limits, in process, in memory and shared through the real Redis; Redis down fails closed
or open as configured. (Concurrency caps, slots released on every exit path, the WebSocket and
two replicas sharing one window need real servers: tests/proxy/test_limits.py.)"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import free_port
from tests.support.tokens import auth

pytestmark = pytest.mark.usefixtures("sim")

REDIS = "redis://127.0.0.1:6379/0"
LIMITS = {"proxy_rate_limit": "10/minute", "proxy_concurrency_limit": 2}


def fresh_user() -> str:
    # Redis keeps windows between test runs; a new user id starts with an empty window.
    return f"user-{uuid.uuid4().hex[:10]}"


async def generate(proxy: InProcessProxy, user: str, role: str = "user", **body: object
                   ) -> httpx.Response:
    return await proxy.client.post("/api/llm/generate", headers=auth(user, role),
                                   json={"model": "llama3.2", "prompt": "hi", "stream": False,
                                         "options": {"num_predict": 2}, **body})


@pytest.fixture(scope="module", params=["memory", "redis"])
async def limited(request: pytest.FixtureRequest, make_proxy: MakeProxy) -> InProcessProxy:
    settings: dict[str, object] = dict(LIMITS)
    if request.param == "redis":
        settings["redis_url"] = REDIS
    return await make_proxy(**settings)


async def test_the_eleventh_request_in_a_minute_is_429(limited: InProcessProxy) -> None:
    user = fresh_user()
    remaining = []
    for _ in range(10):
        response = await generate(limited, user)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "10"
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
    assert remaining == list(range(9, -1, -1))
    refused = await generate(limited, user)
    assert refused.status_code == 429
    assert "rate limit exceeded: 10 requests per minute" in refused.json()["error"]
    assert refused.headers["x-ratelimit-limit"] == "10"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert int(refused.headers["x-ratelimit-reset"]) > time.time()
    # Another user is not affected.
    assert (await generate(limited, fresh_user())).status_code == 200
    assert await limited.metric("llm_proxy_rate_limited_total", limit="rate") >= 1


async def test_limits_per_role_and_per_user(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(**LIMITS, proxy_rate_limit_roles={"admin": "3/minute"},
                             proxy_rate_limit_users={"vip-user": "5/minute"})
    admin = fresh_user()
    assert [(await generate(proxy, admin, "admin")).status_code
            for _ in range(4)] == [200] * 3 + [429]
    assert [(await generate(proxy, "vip-user")).status_code
            for _ in range(6)] == [200] * 5 + [429]


async def test_redis_down_fails_closed_by_default(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = await generate(proxy, fresh_user())
    assert response.status_code == 503
    assert "rate limiter unavailable" in response.json()["error"]
    assert await proxy.metric("llm_proxy_limiter_backend_errors_total", mode="closed") >= 1


async def test_redis_down_fails_open_when_configured(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(proxy_limiter_failure_mode="open",
                             redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = await generate(proxy, fresh_user())
    assert response.status_code == 200
    assert await proxy.metric("llm_proxy_limiter_backend_errors_total", mode="open") >= 1


def test_windows_of_users_who_have_gone_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from limits import RateLimitItemPerMinute

    from proxy.core import ratelimit

    now = [1_000_000.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: now[0])
    window = ratelimit.LocalWindow()
    item = RateLimitItemPerMinute(5)
    for user in range(100):
        assert window.full(item, f"user/{user}") is None
        window.hit(item, f"user/{user}")
    assert window.windows == 100
    now[0] += 61  # a minute later, one user is still active
    hits = in_window = 0
    while hits < window.SWEEP_EVERY:  # enough hits for a sweep, whatever the count before
        if window.full(item, "user/active") is None:
            window.hit(item, "user/active")
            hits, in_window = hits + 1, in_window + 1
        else:  # full: its hits leave the window a minute later
            now[0] += 61
            in_window = 0
    assert window.windows == 1
    # The active user's window kept its hits: as many more fill it as it had room for.
    assert window.hit(item, "user/active").remaining == item.amount - in_window - 1
