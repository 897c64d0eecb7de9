"""The simulator's own control API under `/__sim__/` — not part of Ollama's.

Tests drive failures and read back what the simulator saw through these routes:
- `GET|POST /__sim__/faults`: the fault for the next generate/chat requests, or `refuse`;
- `GET|POST /__sim__/config`: read or change settings (timing, models, registry, slots);
- `GET /__sim__/stats`: request counts, active/queued generations, outcomes, last bodies/headers;
- `POST /__sim__/reset`: clear faults and stats (`{"config": true}` also restores settings).
Errors use Ollama's `{"error": ...}` shape so one client helper reads both APIs.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.simulator.config import ConfigError
from tests.support.simulator.ollama_routes import listener_of, sim_of
from tests.support.simulator.payload import ApiError
from tests.support.simulator.state import FAULT_MODES, FaultPlan


async def _object_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "expected a JSON object")
    return data


async def faults(request: Request) -> Response:
    sim = sim_of(request)
    if request.method == "GET":
        return JSONResponse(sim.faults.as_dict())
    body = await _object_body(request)
    mode = body.get("mode", "none")
    if mode == "refuse":
        return _refuse(request, body)
    if mode not in FAULT_MODES:
        allowed = ", ".join([*FAULT_MODES, "refuse"])
        raise ApiError(400, f"unknown fault mode {mode!r}; expected one of {allowed}")
    count = body.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ApiError(400, f"count must be a positive integer or null, got {count!r}")
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise ApiError(400, "message must be a string")
    sim.faults = FaultPlan() if mode == "none" else FaultPlan(mode, count, message)
    return JSONResponse(sim.faults.as_dict())


def _refuse(request: Request, body: dict[str, Any]) -> Response:
    seconds = body.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise ApiError(400, f"refuse needs seconds > 0, got {seconds!r}")
    listener = listener_of(request)
    if listener is None:
        raise ApiError(501, "refuse needs the simulator's own runner "
                            "(python -m tests.support.simulator)")
    try:
        listener.refuse(float(seconds), request.scope.get("client"))
    except RuntimeError as exc:
        raise ApiError(409, str(exc)) from exc
    # This connection was spared so the answer can arrive; it must not outlive the outage.
    return JSONResponse({"mode": "refuse", "seconds": seconds}, headers={"connection": "close"})


async def config(request: Request) -> Response:
    sim = sim_of(request)
    if request.method == "POST":
        try:
            sim.apply_config(sim.config.updated(await _object_body(request)))
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from exc
    return JSONResponse(sim.config.as_dict())


async def stats(request: Request) -> Response:
    sim = sim_of(request)
    counted = sim.stats
    return JSONResponse(
        {
            "requests": dict(counted.requests),
            "active_streams": sim.gate.active,
            "queued": sim.gate.waiting,
            "completed": counted.completed,
            "cancelled": counted.cancelled,
            "errored": counted.errored,
            "rejected": counted.rejected,
            "connections": {path: len(peers) for path, peers in counted.peers.items()},
            "last_body": counted.last_body,
            "last_headers": counted.last_headers,
            "faults": sim.faults.as_dict(),
        }
    )


async def reset(request: Request) -> Response:
    sim = sim_of(request)
    body = await _object_body(request)
    sim.reset(config=bool(body.get("config")))
    return JSONResponse({"reset": True, "config": sim.config.as_dict()})


ROUTES = [
    Route("/__sim__/faults", faults, methods=["GET", "POST"]),
    Route("/__sim__/config", config, methods=["GET", "POST"]),
    Route("/__sim__/stats", stats, methods=["GET"]),
    Route("/__sim__/reset", reset, methods=["POST"]),
]
