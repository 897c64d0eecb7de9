"""The generation routes, served by `HotRoutes` without FastAPI's routing and dependency
machinery (proxy/api/hot_routes.py): which routes it serves, that a request it cannot answer
exactly as FastAPI would reaches FastAPI instead, that a verified token is remembered no longer
than it may be used (proxy/core/security.py, `VerifiedTokens`), and that the lines and answers
written without their pydantic models are what those models would write.

What a generation answers (every status, body and header, in every dialect) is checked by the
rest of the suite, which now goes through `HotRoutes` for these routes.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.api.deps import CurrentUser, RequestId, StateDep
from proxy.api.hot_routes import HotRoutes, hot_routes
from proxy.api.router import ROUTERS
from proxy.api.routes.llm import LlmWriter
from proxy.api.streaming import ndjson_line
from proxy.core.security import (
    VERIFIED_MAX_ENTRIES,
    VERIFIED_TTL_SECONDS,
    Principal,
    VerifiedTokens,
)
from proxy.schemas import (
    ChatMessage,
    ChatResponse,
    GenerateResponse,
    StreamChunk,
    StreamDone,
    Timings,
    Usage,
)
from proxy.services.relay import Completion, Piece
from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.timing import wait_until_async
from tests.support.tokens import auth, make_token

pytestmark = pytest.mark.usefixtures("sim")

GENERATION_ROUTES = {"/api/llm/generate", "/api/llm/chat", "/v1/chat/completions",
                     "/v1/completions", "/ollama/api/generate", "/ollama/api/chat"}
GENERATE = {"model": "llama3.2", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}


def test_the_generation_routes_and_only_they_are_served_directly() -> None:
    assert set(hot_routes(ROUTERS)) == GENERATION_ROUTES


class Body(BaseModel):
    text: str


async def something_else() -> int:
    return 1


def test_a_route_it_cannot_call_as_fastapi_would_stays_with_fastapi() -> None:
    router = APIRouter()

    @router.post("/hot")
    async def hot(body: Body, request: Request, state: StateDep, user: CurrentUser,
                  request_id: RequestId) -> JSONResponse:
        raise AssertionError("never called")

    @router.post("/unknown-dependency")
    async def unknown(body: Body, state: StateDep,
                      extra: Annotated[int, Depends(something_else)]) -> JSONResponse:
        raise AssertionError("never called")

    @router.post("/returns-a-dict")  # FastAPI would serialise it through the response model
    async def returns_dict(body: Body, user: CurrentUser) -> dict[str, Any]:
        raise AssertionError("never called")

    @router.post("/query/{name}")
    async def with_path(name: str, body: Body, user: CurrentUser) -> JSONResponse:
        raise AssertionError("never called")

    @router.get("/get")
    async def get(user: CurrentUser) -> JSONResponse:
        raise AssertionError("never called")

    @router.post("/guarded", dependencies=[Depends(something_else)])
    async def guarded(body: Body, user: CurrentUser) -> JSONResponse:
        raise AssertionError("never called")

    assert set(hot_routes([router])) == {"/hot"}


def hot_routes_of(proxy: InProcessProxy) -> HotRoutes:
    layer: Any = proxy.app.middleware_stack
    while not isinstance(layer, HotRoutes):
        layer = layer.app
    return layer


class Passed:
    """What HotRoutes left to FastAPI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await self.app(scope, receive, send)


async def test_what_it_cannot_answer_as_fastapi_would_goes_to_fastapi(
        make_proxy: MakeProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = await make_proxy()
    assert (await proxy.client.get("/api/llm/status")).status_code == 200  # the stack is built
    hot = hot_routes_of(proxy)
    passed = Passed(hot.app)
    monkeypatch.setattr(hot, "app", passed)
    headers = auth()

    ok = await proxy.client.post("/api/llm/generate", headers=headers, json=GENERATE)
    assert ok.status_code == 200, ok.text
    assert passed.paths == []

    malformed = await proxy.client.post("/api/llm/generate", headers=headers,
                                        content=b'{"model": ')
    assert malformed.status_code == 400
    assert malformed.json()["error"].startswith("malformed JSON")
    invalid = await proxy.client.post("/v1/completions", headers=headers,
                                      json={"model": "llama3.2", "prompt": 3})
    assert invalid.status_code == 400  # OpenAI's status for a 422
    assert invalid.json()["error"]["message"].startswith("invalid request: prompt")
    not_hot = await proxy.client.get("/api/llm/models", headers=headers)
    assert not_hot.status_code == 200
    assert passed.paths == ["/api/llm/generate", "/v1/completions", "/api/llm/models"]


async def test_a_remembered_token_is_refused_once_it_expires(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(jwt_leeway_seconds=0)
    token = make_token("frank", ttl=2)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await proxy.client.post("/api/llm/generate", headers=headers,
                                    json=GENERATE)).status_code == 200

    async def refused() -> bool:
        answer = await proxy.client.post("/api/llm/generate", headers=headers, json=GENERATE)
        return answer.status_code == 401 and answer.json()["reason"] == "expired"

    await wait_until_async(refused, timeout=30, interval=0.2)


def principal(exp: float) -> Principal:
    return Principal(sub="grace", role="user", claims={"sub": "grace", "exp": exp})


def test_a_verified_token_is_used_until_its_expiry_and_leeway_and_a_minute_at_most() -> None:
    now = time.time()
    cache = VerifiedTokens(leeway=30)
    soon, later = cache.digest("soon"), cache.digest("later")
    cache.put(soon, principal(int(now) + 10), now)
    cache.put(later, principal(now + 3600), now)
    assert cache.get(soon, now + 39) is not None
    assert cache.get(soon, int(now) + 40) is None  # exp + leeway: PyJWT refuses it then too
    assert cache.get(later, now + VERIFIED_TTL_SECONDS - 1) is not None
    assert cache.get(later, now + VERIFIED_TTL_SECONDS) is None  # verified again after that


def test_an_expired_token_is_not_remembered_and_the_oldest_goes_first() -> None:
    now = time.time()
    cache = VerifiedTokens(leeway=0)
    gone = cache.digest("gone")
    cache.put(gone, principal(now - 1), now)
    assert cache.get(gone, now) is None
    digests = [cache.digest(f"token-{n}") for n in range(VERIFIED_MAX_ENTRIES + 1)]
    for digest in digests:
        cache.put(digest, principal(now + 3600), now)
    assert cache.get(digests[0], now) is None
    assert cache.get(digests[1], now) is not None
    assert cache.get(digests[-1], now) is not None


@pytest.mark.parametrize("kind", ["generate", "chat"])
def test_a_stream_line_is_what_its_schema_dumps(kind: str) -> None:
    writer = LlmWriter(kind, "llama3.2", "request-1")
    text = "a ünïcode \"piece\"\n"
    [line] = writer.piece(Piece(content=text))
    if kind == "generate":
        chunk = StreamChunk(model="llama3.2", response=text)
    else:
        chunk = StreamChunk(model="llama3.2", message=ChatMessage(role="assistant", content=text))
    assert line == ndjson_line(chunk.model_dump(exclude_none=True))
    assert writer.piece(Piece(content="")) == []


@pytest.mark.parametrize("kind", ["generate", "chat"])
@pytest.mark.parametrize("measured", [True, False])
def test_the_end_of_an_answer_is_what_its_schema_dumps(kind: str, measured: bool) -> None:
    completion = Completion(
        text="the whole ünïcode answer", done_reason="stop", prompt_tokens=7,
        completion_tokens=5, total_ms=12.34567, first_token_ms=1.23456 if measured else None,
        tokens_per_second=41.2345 if measured else None)
    writer = LlmWriter(kind, "llama3.2", "request-1", "context-1" if kind == "chat" else None)
    fields: dict[str, Any] = {
        "model": "llama3.2", "done_reason": "stop", "request_id": "request-1",
        "context_id": writer.context_id,
        "usage": Usage(prompt_tokens=7, completion_tokens=5, total_tokens=12),
        "timings": Timings(total_ms=12.346, first_token_ms=1.235 if measured else None,
                           tokens_per_second=41.23 if measured else None)}
    assert writer.done(completion) == [ndjson_line(StreamDone(**fields).model_dump())]
    whole: BaseModel
    if kind == "generate":
        whole = GenerateResponse(**fields, response=completion.text)
    else:
        whole = ChatResponse(**fields, message=ChatMessage(role="assistant",
                                                           content=completion.text))
    assert writer.whole(completion) == whole.model_dump(mode="json")
    assert list(writer.whole(completion)) == list(whole.model_dump(mode="json"))  # key order
