"""WebSocket /api/llm/ws with a real client: auth, concurrent requests, cancel, bad frames."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.sync.client import ClientConnection, connect

from tests.proxy.forged_tokens import MALFORMED_TOKENS
from tests.support.database import count_rows
from tests.support.proxy_process import ProxyProcess, metric, sim_stats
from tests.support.timing import scaled, wait_until
from tests.support.tokens import admin_auth, make_token

pytestmark = pytest.mark.usefixtures("sim")


def ws_url(proxy: ProxyProcess, token: str | None = None) -> str:
    base = proxy.url.replace("http://", "ws://") + "/api/llm/ws"
    return f"{base}?token={token}" if token is not None else base


@pytest.fixture
def socket(proxy_server: ProxyProcess) -> Iterator[ClientConnection]:
    with connect(ws_url(proxy_server, make_token("wendy")), open_timeout=scaled(10)) as ws:
        assert receive(ws) == {"type": "ready", "user": "wendy", "role": "user"}
        yield ws


def receive(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=scaled(timeout)))
    return frame


def until_done(ws: ClientConnection, ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    frames: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    open_ids = set(ids)
    while open_ids:
        frame = receive(ws)
        frames[frame["id"]].append(frame)
        if frame["type"] in ("done", "error", "cancelled"):
            open_ids.discard(frame["id"])
    return frames


def test_generate_streams_tokens_then_done(socket: ClientConnection) -> None:
    socket.send(json.dumps({"type": "generate", "id": "g1", "model": "llama3.2",
                            "prompt": "hi", "options": {"num_predict": 5}}))
    frames = until_done(socket, {"g1"})["g1"]
    tokens, done = frames[:-1], frames[-1]
    assert [f["type"] for f in tokens] == ["token"] * 5
    assert all(f["content"] for f in tokens)
    assert done["type"] == "done"
    assert done["usage"]["completion_tokens"] == 5
    assert done["timings"]["first_token_ms"] > 0


def test_auth_frame_instead_of_query_token(proxy_server: ProxyProcess) -> None:
    with connect(ws_url(proxy_server), open_timeout=scaled(10)) as ws:
        ws.send(json.dumps({"type": "auth", "token": make_token("frank", "admin")}))
        assert receive(ws) == {"type": "ready", "user": "frank", "role": "admin"}


@pytest.mark.parametrize("how", ["bad query token", "bad auth frame", "no auth frame",
                                 "expired"])
def test_failed_auth_closes_with_1008(proxy_server: ProxyProcess, how: str) -> None:
    url = {"bad query token": ws_url(proxy_server, "nope"),
           "expired": ws_url(proxy_server, make_token(ttl=-300))}.get(how, ws_url(proxy_server))
    with connect(url, open_timeout=scaled(10)) as ws:
        if how == "bad auth frame":
            ws.send(json.dumps({"type": "auth", "token": "nope"}))
        elif how == "no auth frame":
            ws.send(json.dumps({"type": "generate", "id": "1", "model": "llama3.2",
                                "prompt": "x"}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=scaled(10))
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


def closed_by_server(ws: ClientConnection, frames: list[dict[str, Any]] | None = None
                     ) -> Close:
    """Read until the server closes the socket (keeping what came before in `frames`); the
    close frame it sent. A socket dropped without one (code 1006) fails here."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            frame = receive(ws)
            if frames is not None:
                frames.append(frame)
    assert closed.value.rcvd is not None, f"no close frame from the server: {closed.value}"
    return closed.value.rcvd


def auth_failures(proxy: ProxyProcess, reason: str) -> float:
    try:
        return metric(proxy, "llm_proxy_auth_failures_total", reason=reason)
    except AssertionError:  # no authentication has failed yet on this proxy
        return 0.0


def ws_auth_rows(proxy: ProxyProcess, reason: str) -> int:
    return count_rows(proxy.env["DATABASE_URL"],
                      "SELECT count(*) FROM audit_log WHERE endpoint = '/api/llm/ws' "
                      "AND status = 401 AND error LIKE $1", f"auth: {reason}: %")


def assert_refused_with_1008(proxy: ProxyProcess, ws: ClientConnection, reason: str,
                             failures: float, rows: int) -> None:
    close = closed_by_server(ws)
    assert close.code == 1008
    assert close.reason
    assert auth_failures(proxy, reason) == failures + 1
    wait_until(lambda: ws_auth_rows(proxy, reason) == rows + 1)


# Every malformed token of the HTTP tests, sent both ways. A query string over 8 KiB (the huge
# header) never reaches the app: the server's WebSocket handshake answers 414 on its own.
WS_MALFORMED_TOKENS = [(how, case, mint, reason)
                       for how in ("query", "auth frame")
                       for case, mint, reason in MALFORMED_TOKENS
                       if not (how == "query" and case == "header is huge")]


@pytest.mark.parametrize(("how", "case", "mint", "reason"), WS_MALFORMED_TOKENS,
                         ids=[f"{c[0]}-{c[1]}" for c in WS_MALFORMED_TOKENS])
def test_malformed_tokens_close_with_1008_counted_and_audited(
    proxy_server: ProxyProcess, how: str, case: str, mint: Callable[[], str], reason: str
) -> None:
    failures, rows = auth_failures(proxy_server, reason), ws_auth_rows(proxy_server, reason)
    token = mint()
    url = ws_url(proxy_server, token) if how == "query" else ws_url(proxy_server)
    with connect(url, open_timeout=scaled(10)) as ws:
        if how == "auth frame":
            ws.send(json.dumps({"type": "auth", "token": token}))
        assert_refused_with_1008(proxy_server, ws, reason, failures, rows)


BAD_AUTH_FRAMES: list[tuple[str, str | bytes, str]] = [
    ("nested deeply", "[" * 100_000, "missing_token"),
    ("not JSON", "{not json", "missing_token"),
    ("a list", "[]", "missing_token"),
    ("binary", b"\x00\x01", "missing_token"),
    ("not an auth frame", json.dumps({"type": "ping"}), "missing_token"),
    ("token is a number", json.dumps({"type": "auth", "token": 123}), "missing_token"),
    ("token is missing", json.dumps({"type": "auth"}), "missing_token"),
    ("token is empty", json.dumps({"type": "auth", "token": ""}), "missing_token"),
    ("token is huge", json.dumps({"type": "auth", "token": "A" * 200_000}), "malformed"),
]


@pytest.mark.parametrize(("case", "raw", "reason"), BAD_AUTH_FRAMES,
                         ids=[c[0] for c in BAD_AUTH_FRAMES])
def test_bad_auth_frames_close_with_1008_counted_and_audited(
    proxy_server: ProxyProcess, case: str, raw: str | bytes, reason: str
) -> None:
    failures, rows = auth_failures(proxy_server, reason), ws_auth_rows(proxy_server, reason)
    with connect(ws_url(proxy_server), open_timeout=scaled(10)) as ws:
        ws.send(raw)
        assert_refused_with_1008(proxy_server, ws, reason, failures, rows)


@pytest.fixture(scope="module")
def short_leeway_proxy(proxy_factory, simulator) -> ProxyProcess:
    return proxy_factory(OLLAMA_URL=simulator.url, JWT_LEEWAY_SECONDS="1")


@pytest.mark.parametrize("how", ["query", "auth frame"])
def test_socket_is_closed_when_its_token_expires(short_leeway_proxy: ProxyProcess, sim,
                                                 how: str) -> None:
    proxy, leeway = short_leeway_proxy, 1
    sim.configure(tokens_per_second=1)  # the generation (20 to 40 tokens) outlives the token
    user = f"expiring-{uuid.uuid4().hex[:8]}"
    token = make_token(user, ttl=2)
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    url = ws_url(proxy, token) if how == "query" else ws_url(proxy)
    with connect(url, open_timeout=scaled(10)) as ws:
        if how == "auth frame":
            ws.send(json.dumps({"type": "auth", "token": token}))
        assert receive(ws)["type"] == "ready"
        ws.send(json.dumps({"type": "ping"}))
        assert receive(ws) == {"type": "pong"}
        ws.send(json.dumps({"type": "generate", "id": "long", "model": "llama3.2",
                            "prompt": "go on"}))
        frames: list[dict[str, Any]] = []
        close = closed_by_server(ws, frames)
    assert time.time() >= expires + leeway
    assert close.code == 1008
    assert "expired" in close.reason
    assert frames[0] == {"id": "long", "type": "token", "content": frames[0]["content"]}
    assert frames[-1] == {"id": "long", "type": "error", "status": 401,
                          "error": "cancelled: the token expired"}
    assert not [f for f in frames if f["type"] == "done"]
    # The generation is cancelled upstream and accounted like a disconnect: its slot and
    # in-flight gauge are given back and its audit row says why it ended.
    stats = wait_until(lambda: (st := sim_stats(sim))["active_streams"] == 0 and st)
    assert stats["cancelled"] == 1
    assert metric(proxy, "llm_proxy_requests_in_flight", endpoint="/api/llm/ws") == 0
    wait_until(lambda: count_rows(
        proxy.env["DATABASE_URL"],
        'SELECT count(*) FROM audit_log WHERE "user" = $1 AND endpoint = $2 AND status = 401 '
        "AND error = 'cancelled: the token expired'", user, "/api/llm/ws") == 1)


def test_several_requests_in_flight_on_one_socket(socket: ClientConnection, sim) -> None:
    sim.configure(tokens_per_second=20)  # a window wide enough for b to start inside a
    try:
        for request_id, prompt in (("a", "first"), ("b", "second")):
            socket.send(json.dumps({"type": "generate", "id": request_id, "model": "llama3.2",
                                    "prompt": prompt, "options": {"num_predict": 8}}))
        order: list[str] = []
        open_ids = {"a", "b"}
        while open_ids:
            frame = receive(socket)
            order.append(frame["id"])
            if frame["type"] == "done":
                open_ids.discard(frame["id"])
        assert order.count("a") == order.count("b") == 9
        # Interleaved, not one after the other: b's first token comes before a's last.
        assert order.index("b") < len(order) - 1 - order[::-1].index("a")
    finally:
        sim.configure(tokens_per_second=400)


def test_cancel_stops_one_request(socket: ClientConnection, sim) -> None:
    sim.configure(tokens_per_second=10)
    try:
        socket.send(json.dumps({"type": "generate", "id": "long", "model": "llama3.2",
                                "prompt": "go on", "options": {"num_predict": 200}}))
        assert receive(socket)["type"] == "token"
        socket.send(json.dumps({"type": "cancel", "id": "long"}))
        frame = receive(socket)
        while frame["type"] == "token":
            frame = receive(socket)
        assert frame == {"id": "long", "type": "cancelled"}
        stats = wait_until(lambda: (st := sim_stats(sim))["cancelled"] >= 1 and st)
        assert stats["cancelled"] == 1
        assert stats["active_streams"] == 0
        socket.send(json.dumps({"type": "ping"}))
        assert receive(socket) == {"type": "pong"}
    finally:
        sim.configure(tokens_per_second=400)


BAD_FRAMES: list[tuple[str, str, int]] = [
    ("{not json", "malformed JSON", 400),
    ("[" * 100_000, "malformed JSON", 400),
    ("[1, 2]", "JSON object", 400),
    (json.dumps({"type": "dance", "id": "1"}), "unknown frame type", 400),
    (json.dumps({"type": "generate", "model": "llama3.2", "prompt": "x"}), "id", 422),
    (json.dumps({"type": "generate", "id": "1", "model": "llama3.2", "prompt": ""}),
     "prompt", 422),
    (json.dumps({"type": "generate", "id": "1", "model": "llama3.2", "prompt": "x",
                 "options": {"temperature": 9}}), "temperature", 422),
    (json.dumps({"type": "chat", "id": "1", "model": "llama3.2", "messages": []}),
     "messages", 422),
    (json.dumps({"type": "cancel", "id": "never-started"}), "no request", 404),
    (json.dumps({"type": "generate", "id": "1", "model": "ghost", "prompt": "x"}),
     "model 'ghost' not found", 404),
]


@pytest.mark.parametrize(("raw", "mentions", "status"), BAD_FRAMES)
def test_bad_frames_get_an_error_frame_and_the_socket_lives(
    socket: ClientConnection, raw: str, mentions: str, status: int
) -> None:
    socket.send(raw)
    frame = receive(socket)
    assert frame["type"] == "error"
    assert mentions in frame["error"]
    assert frame["status"] == status
    socket.send(json.dumps({"type": "ping"}))
    assert receive(socket) == {"type": "pong"}


def test_binary_frame_is_an_error_not_a_drop(socket: ClientConnection) -> None:
    socket.send(b"\x00\x01")
    assert "binary" in receive(socket)["error"]
    socket.send(json.dumps({"type": "ping"}))
    assert receive(socket) == {"type": "pong"}


def test_duplicate_id_in_flight_is_refused(socket: ClientConnection, sim) -> None:
    sim.configure(tokens_per_second=20)
    try:
        frame = json.dumps({"type": "generate", "id": "dup", "model": "llama3.2",
                            "prompt": "x", "options": {"num_predict": 10}})
        socket.send(frame)
        socket.send(frame)
        seen = []
        while True:
            received = receive(socket)
            seen.append(received)
            if received["type"] == "done":
                break
        errors = [f for f in seen if f["type"] == "error"]
        assert len(errors) == 1
        assert errors[0]["status"] == 409
    finally:
        sim.configure(tokens_per_second=400)


def test_chat_with_context_over_the_socket_is_persisted(socket: ClientConnection,
                                                        proxy_server: ProxyProcess) -> None:
    cid = uuid.uuid4().hex
    socket.send(json.dumps({"type": "chat", "id": "c1", "model": "llama3.2",
                            "context_id": cid, "options": {"num_predict": 4},
                            "messages": [{"role": "user", "content": "remember this"}]}))
    done = until_done(socket, {"c1"})["c1"][-1]
    assert done["type"] == "done"
    assert done["context_id"] == cid
    with proxy_server.client() as client:
        detail = client.get(f"/api/llm/conversations/{cid}",
                            headers={"Authorization": f"Bearer {make_token('wendy')}"}).json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]


def requests_counted(proxy: ProxyProcess, status: str) -> float:
    try:
        return metric(proxy, "llm_proxy_requests_total", endpoint="/api/llm/ws", status=status)
    except AssertionError:  # no request has finished yet on this proxy
        return 0.0


@pytest.fixture(scope="module")
def audited_proxy(proxy_factory, simulator, database_url: str) -> ProxyProcess:
    return proxy_factory(OLLAMA_URL=simulator.url, DATABASE_URL=database_url,
                         PROXY_MODEL_ALLOWLIST="llama3.2")


def test_refused_frames_are_audited_and_counted_like_http(audited_proxy: ProxyProcess, sim
                                                           ) -> None:
    proxy = audited_proxy
    user = f"refused-{uuid.uuid4().hex[:8]}"
    statuses = ("400", "403", "404", "409", "413", "422", "429")
    before = {status: requests_counted(proxy, status) for status in statuses}
    sim.configure(tokens_per_second=20)  # keep eight generations in flight for the 409/429
    refusals: list[dict[str, Any]] = []
    with connect(ws_url(proxy, make_token(user)), open_timeout=scaled(10)) as ws:
        assert receive(ws)["type"] == "ready"
        # Refused before anything runs (validation, the allowlist, a missing template)...
        bad: list[str | bytes] = [
            json.dumps({"type": "generate", "id": "m", "model": "mistral", "prompt": "x"}),
            json.dumps({"type": "generate", "id": "t", "model": "llama3.2",
                        "template": "no-such-template"}),
            json.dumps({"type": "cancel", "id": "never-started"}),
            json.dumps({"type": "generate", "id": "e", "model": "llama3.2", "prompt": ""}),
            "{not json",
            b"\x00",
            "x" * 1_048_577,
        ]
        for raw in bad:
            ws.send(raw)
        # ...and refused because of what already runs on the socket.
        for i in range(8):
            ws.send(json.dumps({"type": "generate", "id": f"g{i}", "model": "llama3.2",
                                "prompt": "x", "options": {"num_predict": 60}}))
        bad += [
            json.dumps({"type": "generate", "id": "g0", "model": "llama3.2", "prompt": "x"}),
            json.dumps({"type": "generate", "id": "g9", "model": "llama3.2", "prompt": "x"}),
        ]
        for raw in bad[-2:]:
            ws.send(raw)
        while len(refusals) < len(bad):
            frame = receive(ws)
            if frame["type"] == "error":
                refusals.append(frame)
        ws.send(json.dumps({"type": "ping"}))
        while receive(ws)["type"] != "pong":
            pass  # tokens of the eight generations
    assert [f["status"] for f in refusals] == [403, 404, 404, 422, 400, 400, 413, 409, 429], [
        (f["status"], f["error"]) for f in refusals]
    db = proxy.env["DATABASE_URL"]

    def audited(frame: dict[str, Any]) -> int:
        return count_rows(db, 'SELECT count(*) FROM audit_log WHERE "user" = $1 '
                          "AND role = 'user' AND endpoint = '/api/llm/ws' AND status = $2 "
                          "AND error = $3", user, frame["status"], frame["error"])

    wait_until(lambda: [audited(f) for f in refusals] == [1] * len(refusals))
    for status in statuses:
        expected = sum(1 for f in refusals if str(f["status"]) == status)
        wait_until(lambda s=status, n=expected: requests_counted(proxy, s) == before[s] + n)


@pytest.mark.parametrize("how", ["query", "auth frame"])
def test_an_api_key_opens_the_socket_and_its_revocation_closes_it(
        proxy_server: ProxyProcess, how: str) -> None:
    owner = f"keyed-{uuid.uuid4().hex[:8]}"
    with proxy_server.client() as client:
        made = client.post("/api/admin/keys", headers=admin_auth(),
                           json={"name": "ws", "owner": owner})
        assert made.status_code == 201, made.text
        key = made.json()
        url = ws_url(proxy_server, key["secret"]) if how == "query" else ws_url(proxy_server)
        with connect(url, open_timeout=scaled(10)) as ws:
            if how == "auth frame":
                ws.send(json.dumps({"type": "auth", "token": key["secret"]}))
            assert receive(ws) == {"type": "ready", "user": owner, "role": "user"}
            ws.send(json.dumps({"type": "generate", "id": "g", "model": "llama3.2",
                                "prompt": "hi", "options": {"num_predict": 2}}))
            assert until_done(ws, {"g"})["g"][-1]["type"] == "done"
            revoked = client.delete(f"/api/admin/keys/{key['id']}", headers=admin_auth())
            assert revoked.status_code == 200
            # The next request on the open socket finds the key revoked (this replica revoked
            # it, so at once): the socket is closed, as for a refused token.
            ws.send(json.dumps({"type": "generate", "id": "h", "model": "llama3.2",
                                "prompt": "hi", "options": {"num_predict": 2}}))
            close = closed_by_server(ws)
    assert close.code == 1008
    assert close.reason == "API key has been revoked"
    database = proxy_server.env["DATABASE_URL"]
    wait_until(lambda: count_rows(database, "SELECT count(*) FROM audit_log WHERE api_key_id = "
                                  "$1 AND status = 200 AND endpoint = '/api/llm/ws'",
                                  key["id"]) == 1)
    wait_until(lambda: count_rows(database, "SELECT count(*) FROM audit_log WHERE api_key_id = "
                                  "$1 AND status = 401", key["id"]) == 1)
