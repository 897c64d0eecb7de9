"""Concurrency caps and what needs real servers around rate limits: slots come back on every
exit path (disconnects included), the WebSocket is limited too, and two replicas on one Redis
admit exactly the limit; in memory and through the real Redis. (The rate limit itself, per role
and per user, and Redis being down are tested in process, in fast/test_limits.py.)"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.proxy_process import ProxyProcess, sim_fault
from tests.support.timing import scaled
from tests.support.tokens import auth, make_token

pytestmark = pytest.mark.usefixtures("sim")

REDIS = "redis://127.0.0.1:6379/0"
LIMIT_ENV = {"PROXY_RATE_LIMIT": "10/minute", "PROXY_CONCURRENCY_LIMIT": "2"}


def fresh_user() -> str:
    # Redis keeps windows between test runs; a new user id starts with an empty window.
    return f"user-{uuid.uuid4().hex[:10]}"


def generate(proxy: ProxyProcess, user: str, role: str = "user", **body: object
             ) -> httpx.Response:
    with proxy.client() as client:
        return client.post("/api/llm/generate", headers=auth(user, role),
                           json={"model": "llama3.2", "prompt": "hi", "stream": False,
                                 "options": {"num_predict": 2}, **body})




@pytest.fixture(scope="module", params=["memory", "redis"])
def limited(request: pytest.FixtureRequest, proxy_factory, simulator) -> ProxyProcess:
    env = {**LIMIT_ENV, "OLLAMA_URL": simulator.url}
    if request.param == "redis":
        env["REDIS_URL"] = REDIS
    return proxy_factory(**env)


def open_stream(proxy: ProxyProcess, user: str, tokens: int = 200
                ) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=proxy.url, timeout=scaled(30))
    request = client.build_request(
        "POST", "/api/llm/generate", headers=auth(user),
        json={"model": "llama3.2", "prompt": "long", "options": {"num_predict": tokens}})
    response = client.send(request, stream=True)
    return client, response


@pytest.fixture
def slow(sim) -> Iterator[None]:
    sim.configure(tokens_per_second=10)
    yield


def test_concurrency_cap_per_user(limited: ProxyProcess, slow) -> None:
    user = fresh_user()
    streams = [open_stream(limited, user) for _ in range(2)]
    try:
        assert all(r.status_code == 200 for _, r in streams)
        third = generate(limited, user)
        assert third.status_code == 429
        assert "at most 2 per user" in third.json()["error"]
        assert generate(limited, fresh_user()).status_code == 200
    finally:
        for client, response in streams:
            response.close()
            client.close()
    # Both slots come back once the streams are gone.
    deadline = time.monotonic() + scaled(10)
    while generate(limited, user, options={"num_predict": 1}).status_code != 200:
        assert time.monotonic() < deadline, "slots were not released"
        time.sleep(0.1)


def _disconnect_mid_stream(proxy: ProxyProcess, user: str, sim) -> None:
    client, response = open_stream(proxy, user)
    next(response.iter_lines())
    response.close()
    client.close()


def _upstream_error(proxy: ProxyProcess, user: str, sim) -> None:
    sim_fault(sim, "error500", 1)
    assert generate(proxy, user).status_code == 502


def _midstream_error(proxy: ProxyProcess, user: str, sim) -> None:
    sim_fault(sim, "midstream_error", 1)
    with proxy.client() as client:
        lines = client.post("/api/llm/generate", headers=auth(user),
                            json={"model": "llama3.2", "prompt": "x"}).text.splitlines()
    assert json.loads(lines[-1])["status"] == 502


def _success(proxy: ProxyProcess, user: str, sim) -> None:
    assert generate(proxy, user).status_code == 200


def _non_streamed_disconnect(proxy: ProxyProcess, user: str, sim) -> None:
    def call() -> None:
        try:
            # The client gives up after 0.5 s of waiting for the answer: that is the exit path.
            httpx.post(f"{proxy.url}/api/llm/generate", headers=auth(user),
                       timeout=httpx.Timeout(scaled(10), read=0.5),
                       json={"model": "llama3.2", "prompt": "x", "stream": False,
                             "options": {"num_predict": 200}})
        except httpx.TimeoutException:
            pass
    call()


def _websocket_cancel(proxy: ProxyProcess, user: str, sim) -> None:
    url = proxy.url.replace("http://", "ws://") + f"/api/llm/ws?token={make_token(user)}"
    with connect(url, open_timeout=scaled(10)) as ws:
        ws.recv(timeout=scaled(10))
        ws.send(json.dumps({"type": "generate", "id": "1", "model": "llama3.2",
                            "prompt": "x", "options": {"num_predict": 200}}))
        assert json.loads(ws.recv(timeout=scaled(10)))["type"] == "token"
        ws.send(json.dumps({"type": "cancel", "id": "1"}))
        while json.loads(ws.recv(timeout=scaled(10)))["type"] != "cancelled":
            pass


def _websocket_closed(proxy: ProxyProcess, user: str, sim) -> None:
    url = proxy.url.replace("http://", "ws://") + f"/api/llm/ws?token={make_token(user)}"
    with connect(url, open_timeout=scaled(10)) as ws:
        ws.recv(timeout=scaled(10))
        ws.send(json.dumps({"type": "generate", "id": "1", "model": "llama3.2",
                            "prompt": "x", "options": {"num_predict": 200}}))
        assert json.loads(ws.recv(timeout=scaled(10)))["type"] == "token"


EXIT_PATHS: list[Callable[[ProxyProcess, str, object], None]] = [
    _success, _upstream_error, _midstream_error, _disconnect_mid_stream,
    _non_streamed_disconnect, _websocket_cancel, _websocket_closed,
]


@pytest.fixture(scope="module", params=["memory", "redis"])
def one_slot(request: pytest.FixtureRequest, proxy_factory, simulator) -> ProxyProcess:
    env = {"OLLAMA_URL": simulator.url, "PROXY_CONCURRENCY_LIMIT": "1",
           "PROXY_RATE_LIMIT": "1000/minute"}
    if request.param == "redis":
        env["REDIS_URL"] = REDIS
    return proxy_factory(**env)


@pytest.mark.parametrize("exit_path", EXIT_PATHS, ids=lambda f: f.__name__.strip("_"))
def test_the_slot_is_released_on_every_exit_path(one_slot: ProxyProcess, slow, sim,
                                                  exit_path) -> None:
    user = fresh_user()
    exit_path(one_slot, user, sim)
    # With a cap of one, a new generation is admitted only if the slot came back.
    deadline = time.monotonic() + scaled(10)
    while True:
        response = generate(one_slot, user, options={"num_predict": 1})
        if response.status_code == 200:
            break
        assert response.status_code == 429, response.text
        assert time.monotonic() < deadline, f"slot not released after {exit_path.__name__}"
        time.sleep(0.1)


def test_websocket_requests_are_limited_too(proxy_factory, simulator) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_RATE_LIMIT="2/minute")
    user = fresh_user()
    url = proxy.url.replace("http://", "ws://") + f"/api/llm/ws?token={make_token(user)}"
    with connect(url, open_timeout=scaled(10)) as ws:
        ws.recv(timeout=scaled(10))
        outcomes = []
        for i in range(3):
            ws.send(json.dumps({"type": "generate", "id": str(i), "model": "llama3.2",
                                "prompt": "x", "options": {"num_predict": 1}}))
            while True:
                frame = json.loads(ws.recv(timeout=scaled(10)))
                if frame["type"] in ("done", "error"):
                    outcomes.append(frame)
                    break
    assert [f["type"] for f in outcomes] == ["done", "done", "error"]
    assert outcomes[2]["status"] == 429
    assert outcomes[2]["retry_after"] > 0
    # The HTTP and WebSocket paths share one window.
    assert generate(proxy, user).status_code == 429


def test_two_replicas_on_one_redis_admit_exactly_the_limit(proxy_factory, simulator) -> None:
    env = {"OLLAMA_URL": simulator.url, "REDIS_URL": REDIS, "PROXY_RATE_LIMIT": "10/minute",
           "PROXY_CONCURRENCY_LIMIT": "100"}
    replicas = [proxy_factory(**env), proxy_factory(**env)]
    user = fresh_user()
    barrier = threading.Barrier(30)

    def fire(i: int) -> int:
        barrier.wait()
        return generate(replicas[i % 2], user).status_code

    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = list(pool.map(fire, range(30)))
    assert statuses.count(200) == 10
    assert statuses.count(429) == 20
