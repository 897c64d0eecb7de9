"""Authentication over real HTTP: what is accepted, what is refused, and why."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.database import count_rows
from tests.support.proxy_process import ProxyProcess, metric
from tests.support.timing import scaled, wait_until
from tests.support.tokens import SECRET, auth, make_token

pytestmark = pytest.mark.usefixtures("sim")

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def signed(key: object, algorithm: str, headers: dict[str, str] | None = None,
           **claims: object) -> str:
    now = int(time.time())
    body = {"sub": "carol", "role": "user", "iat": now, "exp": now + 600, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key,  # type: ignore[arg-type]
                      algorithm=algorithm, headers=headers)


def models(proxy: ProxyProcess, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with proxy.client() as client:
        return client.get("/api/llm/models", headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(header: object, payload: object = None, key: str = SECRET) -> str:
    """A token whose header (and payload) are exactly what the test says, HMAC-signed with `key`
    by hand, so that PyJWT's encoder cannot tidy up what an attacker would send. Bytes are sent
    as they are; anything else is JSON-encoded. The default payload is a valid user's."""
    def segment(value: object) -> str:
        return b64url(value if isinstance(value, bytes) else json.dumps(value).encode())

    if payload is None:
        payload = {"sub": "mallory", "role": "user", "exp": int(time.time()) + 600}
    signing_input = f"{segment(header)}.{segment(payload)}"
    mac = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64url(mac.digest())}"


def unsigned_none_token() -> str:
    claims = {"sub": "x", "role": "admin", "exp": int(time.time()) + 600}
    return hs256_token({"alg": "none", "typ": "JWT"}, claims).rsplit(".", 1)[0] + "."


# Each token is minted by the test that sends it (a factory per case), never at import time.
REFUSED: list[tuple[str, Callable[[], str | None], str]] = [
    ("no token", lambda: None, "missing_token"),
    ("garbage", lambda: "not.a.jwt", "malformed"),
    ("expired", lambda: make_token(ttl=-120), "expired"),
    ("wrong signature", lambda: make_token(secret="another-secret-" + "y" * 40), "signature"),
    ("alg none", unsigned_none_token, "algorithm"),
    ("no exp", lambda: jwt.encode({"sub": "a", "role": "user"}, SECRET, algorithm="HS256"),
     "claims"),
    ("no sub", lambda: jwt.encode({"role": "user", "exp": int(time.time()) + 60}, SECRET,
                                  algorithm="HS256"), "claims"),
    ("unknown role", lambda: make_token(role="root"), "claims"),
    ("HS512 not allowed", lambda: jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, SECRET,
                                             algorithm="HS512"), "algorithm"),
    ("RS256 not configured", lambda: signed(RSA_KEY, "RS256"), "algorithm"),
]


@pytest.mark.parametrize(("case", "mint", "reason"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_tokens_are_401_with_a_reason(proxy_server: ProxyProcess, case: str,
                                              mint: Callable[[], str | None], reason: str) -> None:
    response = models(proxy_server, mint())
    assert response.status_code == 401, case
    assert response.json()["reason"] == reason
    assert response.headers["www-authenticate"].startswith("Bearer")


def hs256_header(header: object) -> Callable[[], str]:
    return lambda: hs256_token(header)


# What an attacker can put in a token's header without knowing any key (the signature is good
# here, so that the header alone is at fault). Shared with the WebSocket tests (test_ws.py).
MALFORMED_TOKENS: list[tuple[str, Callable[[], str], str]] = [
    ("kid is a number", hs256_header({"alg": "HS256", "kid": 123}), "header"),
    ("kid is an object", hs256_header({"alg": "HS256", "kid": {"a": 1}}), "header"),
    ("kid is a list", hs256_header({"alg": "HS256", "kid": [1]}), "header"),
    ("kid is null", hs256_header({"alg": "HS256", "kid": None}), "header"),
    ("typ is a number", hs256_header({"alg": "HS256", "typ": 1}), "header"),
    ("typ is an object", hs256_header({"alg": "HS256", "typ": {"JWT": True}}), "header"),
    ("cty is a list", hs256_header({"alg": "HS256", "cty": ["JWT"]}), "header"),
    ("alg is a number", hs256_header({"alg": 256}), "algorithm"),
    ("alg is an object", hs256_header({"alg": {"HS256": True}}), "algorithm"),
    ("alg is a list", hs256_header({"alg": ["HS256"]}), "algorithm"),
    ("alg is missing", hs256_header({"typ": "JWT"}), "algorithm"),
    ("alg is long", hs256_header({"alg": "HS256" * 1000}), "algorithm"),
    ("crit is a string", hs256_header({"alg": "HS256", "crit": "b64"}), "header"),
    ("crit is empty", hs256_header({"alg": "HS256", "crit": []}), "header"),
    ("crit lists a number", hs256_header({"alg": "HS256", "crit": [1]}), "header"),
    ("crit names an unknown extension",
     hs256_header({"alg": "HS256", "crit": ["urn:x"], "urn:x": 1}), "header"),
    ("crit names an absent extension", hs256_header({"alg": "HS256", "crit": ["exp2"]}),
     "header"),
    ("crit names b64", hs256_header({"alg": "HS256", "crit": ["b64"], "b64": True}), "header"),
    ("crit holds a newline",
     hs256_header({"alg": "HS256", "crit": ["x\nERROR:    forged line"]}), "header"),
    ("b64 without crit", hs256_header({"alg": "HS256", "b64": False}), "header"),
    ("header is not JSON", hs256_header(b"{alg: HS256}"), "malformed"),
    ("header is a JSON list", hs256_header(b'["HS256"]'), "malformed"),
    ("header is a JSON string", hs256_header(b'"HS256"'), "malformed"),
    ("header is not UTF-8", hs256_header(b"\xff\xfe\xfd"), "malformed"),
    ("header is nested deeply",
     hs256_header(b'{"alg": "HS256", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}"), "malformed"),
    ("header is huge", hs256_header({"alg": "HS256", "x": "A" * 9_000}), "malformed"),
    ("header is not base64", lambda: "@@@." + hs256_token({"alg": "HS256"}).split(".", 1)[1],
     "malformed"),
    ("two segments", lambda: hs256_token({"alg": "HS256"}).rsplit(".", 1)[0], "malformed"),
    ("payload is nested deeply",
     lambda: hs256_token({"alg": "HS256"}, b"[" * 3000 + b"]" * 3000), "malformed"),
    ("payload is not an object", lambda: hs256_token({"alg": "HS256"}, b"[1]"), "malformed"),
    ("exp is infinite", lambda: hs256_token({"alg": "HS256"}, b'{"sub": "m", "exp": 1e999}'),
     "malformed"),
]


def auth_failures(proxy: ProxyProcess, reason: str) -> float:
    try:
        return metric(proxy, "llm_proxy_auth_failures_total", reason=reason)
    except AssertionError:  # no authentication has failed yet on this proxy
        return 0.0


def audited_refusals(proxy: ProxyProcess, request_id: str, reason: str) -> int:
    return count_rows(proxy.env["DATABASE_URL"],
                      'SELECT count(*) FROM audit_log WHERE id = $1 AND status = 401 '
                      'AND "user" IS NULL AND error LIKE $2', request_id, f"auth: {reason}: %")


@pytest.mark.parametrize(("case", "mint", "reason"), MALFORMED_TOKENS,
                         ids=[c[0] for c in MALFORMED_TOKENS])
def test_malformed_tokens_are_401_with_a_reason_counted_and_audited(
    proxy_server: ProxyProcess, case: str, mint: Callable[[], str], reason: str
) -> None:
    failures = auth_failures(proxy_server, reason)
    response = models(proxy_server, mint())
    assert response.status_code == 401, f"{case}: {response.status_code} {response.text[:300]}"
    body = response.json()
    assert body["reason"] == reason
    assert response.headers["www-authenticate"] == (
        f'Bearer error="invalid_token", reason="{reason}"')
    # The message names the problem without echoing what the token carried at length.
    assert body["error"].isprintable() and 0 < len(body["error"]) <= 200, body["error"]
    assert auth_failures(proxy_server, reason) == failures + 1
    request_id = response.headers["x-request-id"]
    wait_until(lambda: audited_refusals(proxy_server, request_id, reason) == 1)


def test_nothing_from_a_token_reaches_a_log_line_unescaped(proxy_factory, simulator) -> None:
    # Debug level: whatever the proxy logs at all must show up here.
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_LOG_LEVEL="debug")
    marker = "FORGED-LOG-LINE"
    now = int(time.time())
    tokens = [
        hs256_token({"alg": "HS256", "crit": [f"x\n{marker} crit", f"y\u2028{marker} crit"]}),
        hs256_token({"alg": "HS256", "kid": f"k\r\n{marker} kid"}, key="another-key"),
        hs256_token({"alg": f"HS256\n{marker} alg"}),
        hs256_token({"alg": "HS256", "typ": f"JWT\n{marker} typ"},
                    {"sub": f"a\n{marker} sub", "exp": now + 600}),
    ]
    for token in tokens:
        response = models(proxy, token)
        assert response.status_code == 401, response.text[:300]
        assert response.json()["error"].isprintable()
    forged = [line for line in proxy.log().splitlines() if line.startswith(marker)]
    assert forged == []
    db = proxy.env["DATABASE_URL"]
    wait_until(lambda: count_rows(db, "SELECT count(*) FROM audit_log WHERE status = 401")
               == len(tokens))
    assert count_rows(db, "SELECT count(*) FROM audit_log WHERE error LIKE $1", "%\n%") == 0


def test_a_valid_token_minted_elsewhere_is_accepted(proxy_server: ProxyProcess) -> None:
    assert models(proxy_server, make_token(sub="dave")).status_code == 200


def test_small_clock_skew_is_tolerated(proxy_server: ProxyProcess) -> None:
    assert models(proxy_server, make_token(ttl=-5)).status_code == 200


def test_every_route_but_status_needs_a_token(proxy_server: ProxyProcess) -> None:
    with proxy_server.client() as client:
        assert client.get("/api/llm/status").status_code == 200
        calls = [("POST", "/api/llm/generate"), ("POST", "/api/llm/chat"),
                 ("GET", "/api/llm/models"), ("GET", "/api/llm/conversations"),
                 ("GET", "/api/llm/conversations/abc"), ("DELETE", "/api/llm/conversations/abc"),
                 ("POST", "/api/admin/models/pull"), ("GET", "/api/admin/models/llama3.2"),
                 ("DELETE", "/api/admin/models/llama3.2")]
        for method, path in calls:
            response = client.request(method, path, json={"model": "llama3.2", "prompt": "x"})
            assert response.status_code == 401, f"{method} {path}"


def test_users_get_403_from_admin_routes(proxy_server: ProxyProcess) -> None:
    with proxy_server.client() as client:
        user = auth("eve", "user")
        assert client.get("/api/admin/models/llama3.2", headers=user).status_code == 403
        assert client.delete("/api/admin/models/llama3.2", headers=user).status_code == 403
        pull = client.post("/api/admin/models/pull", headers=user, json={"model": "gemma3:270m"})
        assert pull.status_code == 403
        assert pull.json() == {"error": "this route requires the admin role"}
        admin = client.get("/api/admin/models/llama3.2", headers=auth("root", "admin"))
        assert admin.status_code == 200


@pytest.fixture(scope="module")
def audience_proxy(proxy_factory, simulator) -> ProxyProcess:
    return proxy_factory(OLLAMA_URL=simulator.url, JWT_AUDIENCE="llm-proxy",
                         JWT_ISSUER="https://idp.example")


def test_audience_and_issuer_are_checked_when_configured(audience_proxy: ProxyProcess) -> None:
    good = make_token(aud="llm-proxy", iss="https://idp.example")
    assert models(audience_proxy, good).status_code == 200
    for token, reason in [
        (make_token(aud="other", iss="https://idp.example"), "audience"),
        (make_token(iss="https://idp.example"), "claims"),
        (make_token(aud="llm-proxy", iss="https://evil.example"), "issuer"),
    ]:
        response = models(audience_proxy, token)
        assert response.status_code == 401
        assert response.json()["reason"] == reason


@pytest.fixture(scope="module")
def rsa_proxy(proxy_factory, simulator) -> ProxyProcess:
    # Both families allowed: the HS/RS confusion attack would need exactly this configuration.
    return proxy_factory(OLLAMA_URL=simulator.url, JWT_ALGORITHMS="RS256,ES256,HS256",
                         JWT_PUBLIC_KEY=pem_public(RSA_KEY))


def test_rs256_with_a_pem_public_key(rsa_proxy: ProxyProcess) -> None:
    assert models(rsa_proxy, signed(RSA_KEY, "RS256")).status_code == 200
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    response = models(rsa_proxy, signed(other, "RS256"))
    assert response.status_code == 401
    assert response.json()["reason"] == "signature"


def test_public_key_used_as_hmac_secret_is_refused(rsa_proxy: ProxyProcess) -> None:
    # The classic confusion: sign HS256 with the (public) PEM as the HMAC key.
    forged = hs256_token({"alg": "HS256", "typ": "JWT"},
                         {"sub": "mallory", "role": "admin", "exp": int(time.time()) + 600},
                         key=pem_public(RSA_KEY))
    response = models(rsa_proxy, forged)
    assert response.status_code == 401
    assert response.json()["reason"] == "signature"


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()


def test_es256_with_a_jwks_url(proxy_factory, simulator, jwks_server: str) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, JWT_ALGORITHMS="ES256",
                          JWT_JWKS_URL=jwks_server, JWT_SECRET="")
    assert models(proxy, signed(EC_KEY, "ES256", headers={"kid": "k1"})).status_code == 200
    stranger = ec.generate_private_key(ec.SECP256R1())
    assert models(proxy, signed(stranger, "ES256", headers={"kid": "k1"})).status_code == 401
    hs = models(proxy, make_token())
    assert hs.status_code == 401
    assert hs.json()["reason"] == "algorithm"


@pytest.mark.parametrize(("env", "message"), [
    ({"JWT_SECRET": ""}, "JWT_SECRET is not set"),
    ({"JWT_SECRET": "short"}, "too short"),
    ({"JWT_SECRET": "changeme"}, "placeholder"),
    ({"JWT_ALGORITHMS": "none"}, "'none' is never accepted"),
    ({"JWT_ALGORITHMS": "RS256"}, "neither JWT_PUBLIC_KEY nor JWT_JWKS_URL"),
])
def test_production_refuses_to_start_without_a_real_key(tmp_path, env: dict[str, str],
                                                        message: str) -> None:
    import os
    import secrets

    # Everything else is production-grade, so that the one flaw under test is what is refused.
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "PROXY_"))},
                "PROXY_ENV": "production", "JWT_SECRET": secrets.token_hex(32),
                "DATABASE_URL": "postgresql://llm@127.0.0.1:5432/llm",
                "REDIS_URL": "redis://127.0.0.1:6379/0", **env}
    result = subprocess.run([sys.executable, "-m", "proxy", "serve", "--port", "1"],
                            cwd=tmp_path, env=full_env, capture_output=True, text=True,
                            timeout=scaled(60))
    assert result.returncode != 0
    assert "configuration error" in result.stderr
    assert message in result.stderr
