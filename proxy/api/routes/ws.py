"""The WebSocket: several generations in flight on one socket, each addressed by a client `id`.

Protocol (JSON text frames):
    client → {"type": "auth", "token": "…"}                     (first frame, if no ?token=)
    client → {"type": "generate", "id": "1", <GenerateRequest fields>}
    client → {"type": "chat", "id": "2", <ChatRequest fields>}
    client → {"type": "cancel", "id": "1"}
    client → {"type": "ping"}
    server → {"type": "ready", "user": …, "role": …}
    server → {"id": …, "type": "token", "content": "…"}           (one per piece)
    server → {"id": …, "type": "done", "done_reason", "usage", "timings", "request_id",
              "context_id"}
    server → {"id": …, "type": "error", "error": "…", "status": 4xx/5xx}
    server → {"id": …, "type": "cancelled"}
    server → {"type": "pong"}
A bad frame gets an error frame and the socket stays open; a refused request frame is audited
and counted like a refused HTTP request (endpoint /api/llm/ws). Failed auth (a bad token, a bad
first frame) closes the socket with 1008, audited and counted like a 401. So does the token's
expiry: at `exp` + JWT_LEEWAY_SECONDS (an API key: at its expiry) the generations still running
are cancelled (each gets an error frame with status 401 and is accounted) and the socket is
closed with 1008. The credential is checked again before each generation starts, so a revoked
API key or a deny-listed token closes the socket (1008) at its next request frame; generations
already running finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Message

from proxy.api.accounting import finish, note_auth_failure
from proxy.audit.record import AuditRecord
from proxy.core.errors import ProxyError
from proxy.core.logs import request_id_var
from proxy.core.model_names import full_model_name
from proxy.core.security import AuthError, Principal, printable
from proxy.schemas import ChatRequest, GenerateRequest
from proxy.services.calls import PlannedCall, plan_chat, plan_generate
from proxy.services.relay import Completion
from proxy.services.state import AppState

router = APIRouter()

AUTH_FRAME_TIMEOUT_SECONDS = 10.0
MAX_IN_FLIGHT_PER_SOCKET = 8
MAX_FRAME_BYTES = 1_048_576
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
# RFC 6455: a close frame's reason is at most 123 bytes of UTF-8.
MAX_CLOSE_REASON_BYTES = 123
ENDPOINT = "/api/llm/ws"
TOKEN_EXPIRED = "cancelled: the token expired"

ClientId = str


class WsGenerate(GenerateRequest):
    type: Literal["generate"]
    id: ClientId = Field(..., min_length=1, max_length=64)


class WsChat(ChatRequest):
    type: Literal["chat"]
    id: ClientId = Field(..., min_length=1, max_length=64)


class WsCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["cancel"]
    id: ClientId = Field(..., min_length=1, max_length=64)


def _close_reason(message: str) -> str:
    return message.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"invalid frame: {where}: {err['msg']}" if where else f"invalid frame: {err['msg']}"


class Session:
    """One authenticated socket and the generations running on it."""

    def __init__(self, websocket: WebSocket, state: AppState, user: Principal,
                 credential: str) -> None:
        self.websocket = websocket
        self.client = websocket.client.host if websocket.client else None
        self.state = state
        self.user = user
        self.credential = credential
        self.revoked = False
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.expired = False
        self._send_lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        # Frames from concurrent generations must not interleave mid-write.
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(frame, ensure_ascii=False))

    async def error(self, message: str, client_id: Any = None, status: int = 400) -> None:
        frame: dict[str, Any] = {"type": "error", "error": message, "status": status}
        if isinstance(client_id, str):
            frame["id"] = client_id
        await self.send(frame)

    async def refuse(self, message: str, client_id: Any = None, status: int = 400,
                     model: str | None = None) -> None:
        """Answer a frame that will not run, accounted as a refused HTTP request is: one audit
        row and one count in the requests metric, then the error frame."""
        record = AuditRecord(id=str(uuid.uuid4()), endpoint=ENDPOINT, client=self.client,
                             error=message[:500],
                             model=full_model_name(model) if model else None)
        record.identify(self.user)
        await finish(self.state, record, status)
        await self.error(message, client_id, status)

    async def handle(self, raw: str) -> None:
        if len(raw) > MAX_FRAME_BYTES:
            await self.refuse(f"frame larger than {MAX_FRAME_BYTES} bytes", status=413)
            return
        try:
            frame = json.loads(raw)
        except ValueError as exc:
            await self.refuse(f"malformed JSON: {exc}")
            return
        except RecursionError:
            await self.refuse("malformed JSON: nested too deeply")
            return
        if not isinstance(frame, dict):
            await self.refuse("a frame must be a JSON object")
            return
        kind = frame.get("type")
        client_id = frame.get("id")
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "cancel":
            await self._cancel(frame)
        elif kind in ("generate", "chat"):
            await self._start(kind, frame)
        elif kind == "auth":
            await self.refuse("already authenticated", client_id)
        elif isinstance(kind, str):
            await self.refuse(f"unknown frame type {printable(kind, 40)!r}", client_id)
        else:
            await self.refuse("a frame needs a string 'type'", client_id)

    async def _cancel(self, frame: dict[str, Any]) -> None:
        try:
            cancel = WsCancel.model_validate(frame)
        except ValidationError as exc:
            await self.refuse(_first_error(exc), frame.get("id"), status=422)
            return
        task = self.tasks.get(cancel.id)
        if task is None:
            await self.refuse(f"no request {cancel.id!r} in flight", cancel.id, status=404)
            return
        task.cancel()

    async def _start(self, kind: str, frame: dict[str, Any]) -> None:
        client_id = frame.get("id")
        try:
            request: WsGenerate | WsChat = (
                WsGenerate.model_validate(frame) if kind == "generate"
                else WsChat.model_validate(frame)
            )
        except ValidationError as exc:
            await self.refuse(_first_error(exc), client_id, status=422)
            return
        if request.id in self.tasks:
            await self.refuse(f"request {request.id!r} is already in flight", request.id, 409,
                              request.model)
            return
        if len(self.tasks) >= MAX_IN_FLIGHT_PER_SOCKET:
            await self.refuse(f"at most {MAX_IN_FLIGHT_PER_SOCKET} requests in flight per "
                              f"socket", request.id, 429, request.model)
            return
        if not await self._still_valid(request.id, request.model):
            return
        record = AuditRecord(id=str(uuid.uuid4()), endpoint="/api/llm/ws", client=self.client)
        record.identify(self.user)
        try:
            # Planning admits (rate limit, slot) before it renders or reads anything.
            planned = (
                await plan_generate(self.state, self.user, request, record)
                if isinstance(request, WsGenerate)
                else await plan_chat(self.state, self.user, request, record)
            )
        except ProxyError as exc:
            record.error = exc.message
            await finish(self.state, record, exc.status_code)
            refusal: dict[str, Any] = {"type": "error", "id": request.id, "error": exc.message,
                                       "status": exc.status_code}
            if exc.status_code == 429:
                refusal["retry_after"] = int(exc.headers().get("Retry-After", "1"))
            await self.send(refusal)
            return
        except BaseException:
            # Admitted, then failed unexpectedly: the slot must still come back.
            await finish(self.state, record, 500)
            raise
        task = asyncio.create_task(self._run(request.id, planned, record))
        self.tasks[request.id] = task

    async def _still_valid(self, client_id: str, model: str) -> bool:
        """Check the credential again (a revoked key or a deny-listed token must not start
        anything more); if it is refused, close the socket with 1008, accounted as a 401."""
        try:
            self.user = await self.state.verifier.verify(self.credential)
        except ProxyError as exc:  # the database behind API keys cannot be reached
            await self.refuse(exc.message, client_id, exc.status_code, model)
            return False
        except AuthError as exc:
            record = AuditRecord(id=str(uuid.uuid4()), endpoint=ENDPOINT, client=self.client,
                                 model=full_model_name(model))
            record.identify(self.user)
            note_auth_failure(self.state, record, exc)
            await finish(self.state, record, 401)
            self.revoked = True
            await self.websocket.close(POLICY_VIOLATION, _close_reason(exc.message))
            return False
        return True

    async def _run(self, client_id: str, planned: PlannedCall, record: AuditRecord) -> None:
        request_id = record.id
        # This task's log lines are this generation's, not the connection's.
        request_id_var.set(request_id)
        status = 200
        in_flight = self.state.metrics.in_flight.labels(endpoint=ENDPOINT)
        in_flight.inc()
        try:
            async for item in planned.relay(self.state.upstream):
                if isinstance(item, Completion):
                    planned.account_completion(record, item)
                    if planned.after is not None:
                        await planned.after(item)
                    await self.send({
                        "id": client_id, "type": "done", "done_reason": item.done_reason,
                        "request_id": request_id, "context_id": planned.context_id,
                        "usage": item.usage, "timings": item.timings,
                    })
                    return
                if item.content:
                    await self.send({"id": client_id, "type": "token", "content": item.content})
        except ProxyError as exc:
            status, record.error = exc.status_code, exc.message[:500]
            with contextlib.suppress(Exception):
                await self.error(exc.message, client_id, exc.status_code)
        except asyncio.CancelledError:
            if self.expired:
                status, record.error = 401, TOKEN_EXPIRED
                with contextlib.suppress(Exception):
                    await self.error(TOKEN_EXPIRED, client_id, 401)
            else:
                status, record.error = 499, "cancelled by the client"
                with contextlib.suppress(Exception):
                    await self.send({"id": client_id, "type": "cancelled"})
        finally:
            in_flight.dec()
            self.tasks.pop(client_id, None)
            await finish(self.state, record, status)

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def expire(self) -> None:
        """The token has expired: cancel what runs (accounted as 401), then close with 1008."""
        self.expired = True
        await self.close()
        await self.websocket.close(POLICY_VIOLATION, "token expired")

    async def receive_until_expiry(self, expires_at: float | None) -> Message | None:
        """The next message, or None once the credential has expired (`expires_at`: loop time;
        None: never)."""
        if expires_at is None:
            return await self.websocket.receive()
        loop = asyncio.get_running_loop()
        while True:
            remaining = expires_at - loop.time()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    return await self.websocket.receive()


async def _authenticate(websocket: WebSocket, state: AppState
                        ) -> tuple[Principal, str] | None:
    """The caller and the credential they gave, or None after closing the socket with 1008
    (and auditing the failure), or 1013 (try again later) when API keys cannot be read."""
    token = websocket.query_params.get("token")
    try:
        if token is None:
            token = await _auth_frame_token(websocket)
        return await state.verifier.verify(token), token
    except ProxyError as exc:
        await websocket.close(TRY_AGAIN_LATER, _close_reason(exc.message))
        return None
    except AuthError as exc:
        client = websocket.client.host if websocket.client else None
        record = AuditRecord(id=str(uuid.uuid4()), endpoint=ENDPOINT, client=client)
        note_auth_failure(state, record, exc)
        await finish(state, record, 401)
        await websocket.close(POLICY_VIOLATION, _close_reason(exc.message))
        return None


async def _auth_frame_token(websocket: WebSocket) -> str:
    try:
        raw = await asyncio.wait_for(websocket.receive_text(), AUTH_FRAME_TIMEOUT_SECONDS)
        frame = json.loads(raw)
    # KeyError: a binary frame; RecursionError: JSON nested deeper than the parser goes.
    except (TimeoutError, ValueError, KeyError, RecursionError) as exc:
        raise AuthError("missing_token", "first frame must be {\"type\": \"auth\", "
                                         "\"token\": …}") from exc
    token = frame.get("token") if isinstance(frame, dict) and frame.get("type") == "auth" \
        else None
    if not isinstance(token, str):
        raise AuthError("missing_token", "first frame must be {\"type\": \"auth\", "
                                         "\"token\": …}")
    return token


@router.websocket("/api/llm/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    state: AppState = websocket.app.state.proxy
    await websocket.accept()
    try:
        authenticated = await _authenticate(websocket, state)
    except WebSocketDisconnect:
        return
    if authenticated is None:
        return
    user, credential = authenticated
    session = Session(websocket, state, user, credential)
    # The token's `exp` is wall-clock time; the wait for it runs on the loop's monotonic clock.
    # A token gets the leeway its verification allows; a key's expiry is the proxy's own clock.
    leeway = state.settings.jwt_leeway_seconds if user.key is None else 0
    expires_at = (None if user.expires_at is None else
                  asyncio.get_running_loop().time() + user.expires_at + leeway - time.time())
    try:
        await session.send({"type": "ready", "user": user.sub, "role": user.role})
        while True:
            message = await session.receive_until_expiry(expires_at)
            if message is None:
                await session.expire()
                break
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is not None:
                await session.handle(message["text"])
            else:
                await session.refuse("frames must be JSON text, not binary")
            if session.revoked:
                break
    except WebSocketDisconnect:
        pass
    finally:
        await session.close()
