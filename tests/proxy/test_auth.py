"""Authentication over real HTTP: what is accepted, what is refused, and why."""

from __future__ import annotations

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

from tests.proxy.conftest import SECRET, ProxyProcess, auth, make_token
from tests.timing import scaled

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


def unsigned_none_token() -> str:
    def b64(obj: dict[str, object]) -> str:
        import base64
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    claims = {"sub": "x", "role": "admin", "exp": int(time.time()) + 600}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


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
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"sub": "mallory", "role": "admin",
                              "exp": int(time.time()) + 600}).encode())
    mac = hmac.new(pem_public(RSA_KEY).encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    forged = f"{header}.{payload}.{b64(mac.digest())}"
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
