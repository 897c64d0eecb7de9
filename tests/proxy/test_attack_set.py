"""The attack set: what an outsider (or a curious user) sends at a real proxy process, and what
the proxy must answer. Every attack gets its documented refusal (401/403/408/413/422/429), never
a 5xx; every refusal the application sees is audited (a row under the server's own request id,
with that status) and counted (`llm_proxy_requests_total`, and `llm_proxy_auth_failures_total`
for tokens). Refusals made below the application (the HTTP server's header cap) are checked for
what they can be: a 4xx and a closed connection, never a hang.

The defects each attack once exposed have their own regression tests beside the code they fixed
(test_auth, test_ws, test_request_identity, test_pre_auth, test_templates, ...); this module holds
them together as one table an operator or a reviewer can read.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.database import count_rows
from tests.support.proxy_process import ProxyProcess, metric
from tests.support.timing import scaled, wait_until
from tests.support.tokens import SECRET, admin_auth, auth, make_token

pytestmark = pytest.mark.usefixtures("sim")

GENERATE = "/api/llm/generate"
FLOODER = "flooder"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def target(proxy_factory, simulator) -> ProxyProcess:
    proxy = proxy_factory(
        OLLAMA_URL=simulator.url,
        PROXY_MAX_BODY_BYTES=str(MAX_BODY),
        PROXY_BODY_READ_TIMEOUT_SECONDS=str(scaled(2)),
        PROXY_RATE_LIMIT_USERS=json.dumps({FLOODER: "2/minute"}),
    )
    with proxy.client() as client:
        for name, source in HOSTILE_TEMPLATES.items():
            response = client.post("/api/admin/templates", headers=admin_auth(),
                                   json={"name": name, "template": source})
            assert response.status_code == 201, response.text
    return proxy


# -- tokens -------------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "mallory", "role": "user", "iat": now, "exp": now + 600, **extra}


def _forged(header: object, claims: dict[str, Any] | None = None,
            signature: bytes = b"sig") -> str:
    """A token with any header at all, signed with nothing the proxy trusts."""
    head = json.dumps(header).encode() if not isinstance(header, bytes) else header
    body = json.dumps(claims or _claims()).encode()
    return f"{_b64(head)}.{_b64(body)}.{_b64(signature)}"


def _hs256(headers: dict[str, Any] | None = None, **claims: Any) -> str:
    """Signed with the proxy's real secret: only the header or a claim is hostile. Signed by
    hand, because PyJWT refuses to write some of these headers (a non-string `kid`)."""
    import hashlib
    import hmac

    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", **(headers or {})}).encode())
    body = _b64(json.dumps(_claims(**claims)).encode())
    mac = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def _rsa_public_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _hs256_with_public_key_as_secret() -> str:
    """The HS/RS confusion: an HMAC token keyed with a public key."""
    import hashlib
    import hmac

    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims(role="admin")).encode())
    mac = hmac.new(_rsa_public_pem(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


# (name, token factory, the 401 reason): every one of them minted when the test runs.
BAD_TOKENS: list[tuple[str, Callable[[], str], str]] = [
    ("alg none", lambda: _forged({"alg": "none", "typ": "JWT"}, _claims(role="admin"), b""),
     "algorithm"),
    ("alg as a list", lambda: _forged({"alg": ["HS256"]}), "algorithm"),
    ("HS256 keyed with a public key", _hs256_with_public_key_as_secret, "signature"),
    ("RS256 when only HS256 is allowed", lambda: _forged({"alg": "RS256"}), "algorithm"),
    ("expired", lambda: make_token("mallory", ttl=-600), "expired"),
    ("signed with another secret", lambda: make_token(secret="x" * 64), "signature"),
    ("kid is a number", lambda: _hs256({"kid": 123}), "header"),
    ("kid is an object", lambda: _hs256({"kid": {"path": "/etc/passwd"}}), "header"),
    ("crit extension", lambda: _hs256({"crit": ["exp"]}), "header"),
    ("crit forging a log line", lambda: _hs256({"crit": ["x\nFORGED-LOG-LINE"]}), "header"),
    ("header is not JSON", lambda: f"{_b64(b'{nope')}.{_b64(b'{}')}.{_b64(b'x')}", "malformed"),
    ("header is a list", lambda: _forged([1, 2]), "malformed"),
    ("payload is not an object", lambda: jwt.api_jws.encode(b"[1]", SECRET, algorithm="HS256"),
     "malformed"),
    ("role escalation", lambda: _hs256(role="superadmin"), "claims"),
    ("sub with a newline", lambda: _hs256(sub="alice\nadmin"), "claims"),
    ("no sub", lambda: jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),
     "claims"),
    ("far too long", lambda: _hs256(pad="p" * 9000), "malformed"),
    ("not ASCII", lambda: "\u00e9" * 40, "malformed"),
]
# A well-signed control case, so the table cannot pass by refusing everything.
GOOD_TOKEN = _hs256


# -- what the generic checks need ---------------------------------------------------------------

@dataclass
class Refusal:
    response: httpx.Response
    status: int

    @property
    def request_id(self) -> str:
        return self.response.headers["x-request-id"]


def assert_refused_audited_counted(target: ProxyProcess, refusal: Refusal,
                                   counted_before: float) -> None:
    response = refusal.response
    assert response.status_code == refusal.status, response.text
    assert response.status_code < 500
    assert "error" in response.json(), response.text
    database = target.env["DATABASE_URL"]
    wait_until(lambda: count_rows(database, "SELECT count(*) FROM audit_log WHERE id = $1 AND "
                                  "status = $2", refusal.request_id, refusal.status) == 1,
               timeout=15)
    wait_until(lambda: metric(target, "llm_proxy_requests_total",
                              status=str(refusal.status)) > counted_before)


def requests_counted(target: ProxyProcess, status: int) -> float:
    try:
        return metric(target, "llm_proxy_requests_total", status=str(status))
    except AssertionError:  # no request has been counted at all yet
        return 0.0


def post(target: ProxyProcess, body: object = None, headers: dict[str, Any] | None = None,
         path: str = GENERATE, content: bytes | None = None) -> httpx.Response:
    with target.client() as client:
        if content is not None:
            return client.post(path, headers=headers or auth("mallory"), content=content)
        return client.post(path, headers=headers or auth("mallory"), json=body)


def generate_body(**extra: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "prompt": "hello", "stream": False,
            "options": {"num_predict": 2}, **extra}


# -- JWT ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("case", "mint", "reason"), BAD_TOKENS, ids=[c[0] for c in BAD_TOKENS])
def test_a_bad_token_is_401_with_its_reason_audited_and_counted(
    target: ProxyProcess, case: str, mint: Callable[[], str], reason: str
) -> None:
    before = requests_counted(target, 401)
    try:
        failures_before = metric(target, "llm_proxy_auth_failures_total", reason=reason)
    except AssertionError:
        failures_before = 0.0
    # Bytes: a header value that is not ASCII is sent as it is (latin-1 on the wire).
    header = f"Bearer {mint()}".encode("latin-1", errors="replace")
    response = post(target, generate_body(), headers={"Authorization": header})
    assert response.json().get("reason") == reason, (case, response.text)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_refused_audited_counted(target, Refusal(response, 401), before)
    assert metric(target, "llm_proxy_auth_failures_total", reason=reason) > failures_before


def test_the_same_forger_with_the_real_key_and_plain_headers_is_accepted(
    target: ProxyProcess,
) -> None:
    response = post(target, generate_body(), headers={"Authorization": f"Bearer {GOOD_TOKEN()}"})
    assert response.status_code == 200, response.text


def test_nothing_from_a_token_starts_a_log_line(target: ProxyProcess) -> None:
    token = _hs256({"crit": ["x\nFORGED-LOG-LINE"]})
    assert post(target, generate_body(), headers={"Authorization": f"Bearer {token}"}
                ).status_code == 401
    assert not any(line.startswith("FORGED-LOG-LINE") for line in target.log().splitlines())


def test_a_user_token_on_an_admin_route_is_403_audited_and_counted(target: ProxyProcess) -> None:
    before = requests_counted(target, 403)
    response = post(target, {"model": "gemma3:270m"}, path="/api/admin/models/pull")
    assert_refused_audited_counted(target, Refusal(response, 403), before)


# -- bodies -------------------------------------------------------------------------------------

def _nested(depth: int) -> bytes:
    return b'{"model": "llama3.2", "prompt": "x", "options": ' + b"[" * depth + b"]" * depth \
        + b"}"


BAD_BODIES: list[tuple[str, Callable[[], bytes], int]] = [
    ("malformed JSON", lambda: b'{"model": "llama3.2", "prompt": ', 400),
    ("JSON nested 30000 deep", lambda: _nested(30_000), 400),
    ("a JSON list", lambda: b"[1, 2, 3]", 422),
    ("body over the cap", lambda: json.dumps(generate_body(prompt="x" * MAX_BODY)).encode(), 413),
    ("control characters", lambda: json.dumps(generate_body(prompt="a\u0000b")).encode(), 422),
    ("reserved option num_gpu", lambda: json.dumps(generate_body(options={"num_gpu": 99})).encode(),
     422),
    ("num_ctx beyond the cap",
     lambda: json.dumps(generate_body(options={"num_ctx": 1_048_576})).encode(), 422),
    ("wrong types", lambda: json.dumps({"model": 7, "prompt": ["x"]}).encode(), 422),
    ("model path traversal", lambda: json.dumps(generate_body(model="../../etc/passwd")).encode(),
     422),
    ("unknown top-level field", lambda: json.dumps(generate_body(keep_alive_forever=True)).encode(),
     422),
]


@pytest.mark.parametrize(("case", "make", "status"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_a_bad_body_is_refused_audited_and_counted(target: ProxyProcess, case: str,
                                                   make: Callable[[], bytes], status: int) -> None:
    before = requests_counted(target, status)
    response = post(target, content=make())
    assert_refused_audited_counted(target, Refusal(response, status), before)


def _raw(target: ProxyProcess, head: str, body: bytes = b"") -> bytes:
    """Send a request over a raw socket; return what came back before the server closed (a
    reset counts as closing)."""
    host, port = target.url.removeprefix("http://").split(":")
    chunks = []
    with socket.create_connection((host, int(port)), timeout=scaled(10)) as sock:
        try:
            sock.sendall(head.encode() + body)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def test_an_unauthenticated_upload_is_refused_before_its_body(target: ProxyProcess) -> None:
    host = target.url.removeprefix("http://")
    answer = _raw(target, f"POST {GENERATE} HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                          f"application/json\r\nContent-Length: 100000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]


def test_a_stalled_upload_is_408_audited(target: ProxyProcess) -> None:
    host = target.url.removeprefix("http://")
    before = requests_counted(target, 408)
    answer = _raw(target, f"POST {GENERATE} HTTP/1.1\r\nHost: {host}\r\nAuthorization: "
                          f"{auth('slowpoke')['Authorization']}\r\nContent-Length: 500\r\n\r\n",
                  b'{"model": ')
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    wait_until(lambda: requests_counted(target, 408) > before)
    wait_until(lambda: count_rows(target.env["DATABASE_URL"], "SELECT count(*) FROM audit_log "
                                  "WHERE \"user\" = $1 AND status = 408", "slowpoke") == 1)


# -- headers ------------------------------------------------------------------------------------

def test_an_oversized_header_is_refused_by_the_server_not_hung(target: ProxyProcess) -> None:
    host = target.url.removeprefix("http://")
    answer = _raw(target, f"GET /api/llm/models HTTP/1.1\r\nHost: {host}\r\n"
                          f"Cookie: {'c' * 200_000}\r\n\r\n")
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    assert 400 <= status < 500 or answer == b"", answer[:200]


def test_a_reused_request_id_names_nothing_the_server_trusts(target: ProxyProcess) -> None:
    user = f"replayer-{uuid.uuid4().hex[:6]}"
    headers = {**auth(user), "X-Request-ID": "same-id-every-time"}
    responses = [post(target, generate_body(), headers=headers) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    ids = {r.headers["x-request-id"] for r in responses}
    assert len(ids) == 3 and "same-id-every-time" not in ids
    wait_until(lambda: count_rows(target.env["DATABASE_URL"], 'SELECT count(*) FROM audit_log '
                                  'WHERE "user" = $1', user) == 3)


def test_a_forwarded_for_header_is_not_believed_by_default(target: ProxyProcess) -> None:
    user = f"spoofer-{uuid.uuid4().hex[:6]}"
    response = post(target, generate_body(),
                    headers={**auth(user), "X-Forwarded-For": "203.0.113.7"})
    assert response.status_code == 200
    wait_until(lambda: count_rows(target.env["DATABASE_URL"], 'SELECT count(*) FROM audit_log '
                                  'WHERE "user" = $1 AND client = $2', user, "127.0.0.1") == 1)


# -- limits -------------------------------------------------------------------------------------

def test_past_the_rate_limit_is_429_audited_and_counted(target: ProxyProcess) -> None:
    headers = auth(FLOODER)
    for _ in range(2):
        assert post(target, generate_body(), headers=headers).status_code == 200
    before = requests_counted(target, 429)
    response = post(target, generate_body(), headers=headers)
    assert int(response.headers["retry-after"]) > 0
    assert_refused_audited_counted(target, Refusal(response, 429), before)


# -- templates ----------------------------------------------------------------------------------

# Stored by an admin, rendered with a caller's variables: each must end in a 422.
HOSTILE_TEMPLATES = {
    "attack-divide": "{{ 1 // (n | int) }}",
    "attack-range": "{% for i in range(n | int) %}{% for j in range(n | int) %}x{% endfor %}"
                    "{% endfor %}",
    "attack-power": "{{ (n | int) ** (n | int) ** (n | int) }}",
    "attack-dunder": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "attack-undefined": "{{ missing.attribute }}",
}
TEMPLATE_ATTACKS = [("attack-divide", {"n": "0"}), ("attack-range", {"n": "100000"}),
                    ("attack-power", {"n": "100"}), ("attack-dunder", {}),
                    ("attack-undefined", {})]
# Refused when an admin tries to store them: a template cannot reach other templates or files.
UNSTORABLE_TEMPLATES = {
    "include": "{% include '/etc/passwd' %}",
    "import": "{% import 'os' as os %}{{ os }}",
    "extends": "{% extends 'base' %}",
    "syntax": "{% for %}",
}


@pytest.mark.parametrize(("template", "variables"), TEMPLATE_ATTACKS,
                         ids=[t for t, _ in TEMPLATE_ATTACKS])
def test_a_hostile_template_is_422_audited_and_counted(target: ProxyProcess, template: str,
                                                      variables: dict[str, str]) -> None:
    before = requests_counted(target, 422)
    response = post(target, {"model": "llama3.2", "template": template, "variables": variables,
                             "stream": False})
    assert_refused_audited_counted(target, Refusal(response, 422), before)


@pytest.mark.parametrize("kind", list(UNSTORABLE_TEMPLATES))
def test_a_template_reaching_outside_itself_cannot_be_stored(target: ProxyProcess,
                                                            kind: str) -> None:
    before = requests_counted(target, 422)
    response = post(target, {"name": f"attack-store-{kind}",
                             "template": UNSTORABLE_TEMPLATES[kind]},
                    headers=admin_auth(), path="/api/admin/templates")
    assert_refused_audited_counted(target, Refusal(response, 422), before)


# -- WebSocket ----------------------------------------------------------------------------------

def _ws_url(target: ProxyProcess, token: str | None) -> str:
    base = target.url.replace("http://", "ws://") + "/api/llm/ws"
    return f"{base}?token={token}" if token is not None else base


def _ws_rows(target: ProxyProcess, status: int) -> int:
    return count_rows(target.env["DATABASE_URL"], "SELECT count(*) FROM audit_log WHERE "
                      "endpoint = '/api/llm/ws' AND status = $1", status)


WS_BAD_TOKENS = [c for c in BAD_TOKENS if c[0] in ("alg none", "kid is a number",
                                                     "crit extension", "expired")]


@pytest.mark.parametrize(("case", "mint", "reason"), WS_BAD_TOKENS,
                         ids=[c[0] for c in WS_BAD_TOKENS])
def test_a_bad_token_closes_the_socket_with_1008_audited(target: ProxyProcess, case: str,
                                                         mint: Callable[[], str],
                                                         reason: str) -> None:
    before = _ws_rows(target, 401)
    with connect(_ws_url(target, mint()), open_timeout=scaled(10)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=scaled(10))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, case
    wait_until(lambda: _ws_rows(target, 401) > before)


WS_BAD_FRAMES: list[tuple[str, Callable[[], str], int]] = [
    ("nested 100000 deep", lambda: "[" * 100_000, 400),
    ("not an object", lambda: "[1]", 400),
    ("unknown type", lambda: json.dumps({"type": "\u0007\nrm -rf", "id": "1"}), 400),
    ("reserved option", lambda: json.dumps({"type": "generate", "id": "1", "model": "llama3.2",
                                            "prompt": "x", "options": {"num_gpu": 9}}), 422),
    ("unknown model", lambda: json.dumps({"type": "generate", "id": "1", "model": "ghost",
                                          "prompt": "x"}), 404),
]


@pytest.mark.parametrize(("case", "make", "status"), WS_BAD_FRAMES,
                         ids=[c[0] for c in WS_BAD_FRAMES])
def test_a_bad_frame_gets_an_error_frame_audited_and_the_socket_lives(
    target: ProxyProcess, case: str, make: Callable[[], str], status: int
) -> None:
    before = _ws_rows(target, status)
    with connect(_ws_url(target, make_token("wanda")), open_timeout=scaled(10)) as ws:
        assert json.loads(ws.recv(timeout=scaled(10)))["type"] == "ready"
        ws.send(make())
        frame = json.loads(ws.recv(timeout=scaled(10)))
        assert (frame["type"], frame["status"]) == ("error", status), (case, frame)
        assert "\n" not in frame["error"]
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=scaled(10))) == {"type": "pong"}
    wait_until(lambda: _ws_rows(target, status) > before)
