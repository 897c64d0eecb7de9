"""A caller's `X-Request-ID` is never a key the server trusts: streams sharing one id each take
a concurrency slot of their own (real streams, held open, against a real proxy process). The
audit side of the same rule runs in process, in fast/test_request_identity.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.proxy_process import ProxyProcess
from tests.support.timing import scaled
from tests.support.tokens import auth

pytestmark = pytest.mark.usefixtures("sim")

REDIS = "redis://127.0.0.1:6379/0"


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module", params=["memory", "redis"])
def capped(request: pytest.FixtureRequest, proxy_factory, simulator) -> ProxyProcess:
    env = {"OLLAMA_URL": simulator.url, "PROXY_CONCURRENCY_LIMIT": "2",
           "PROXY_RATE_LIMIT": "1000/minute"}
    if request.param == "redis":
        env["REDIS_URL"] = REDIS
    return proxy_factory(**env)


@pytest.fixture
def open_streams() -> Iterator[list[tuple[httpx.Client, httpx.Response]]]:
    opened: list[tuple[httpx.Client, httpx.Response]] = []
    yield opened
    for client, response in opened:
        response.close()
        client.close()


def test_streams_sharing_one_client_id_each_take_a_slot(
    capped: ProxyProcess, sim, open_streams: list[tuple[httpx.Client, httpx.Response]]
) -> None:
    # Slow enough that every stream is still running when the next one asks for a slot: a
    # streamed answer starts (200) only once its slot is held and the first token is in.
    sim.configure(tokens_per_second=10)
    user, shared = fresh("slot-sharer"), fresh("one-slot-please")
    for _ in range(6):
        client = httpx.Client(base_url=capped.url, timeout=scaled(30))
        request = client.build_request(
            "POST", "/api/llm/generate", headers={**auth(user), "X-Request-ID": shared},
            json={"model": "llama3.2", "prompt": "long", "options": {"num_predict": 200}})
        open_streams.append((client, client.send(request, stream=True)))
    statuses = [response.status_code for _, response in open_streams]
    assert statuses == [200, 200, 429, 429, 429, 429]
    refused = open_streams[2][1]
    refused.read()
    assert "at most 2 per user" in refused.json()["error"]
