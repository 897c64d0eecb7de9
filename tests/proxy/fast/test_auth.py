"""Authentication, in process: what is accepted, what is refused, and why."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.proxy.forged_tokens import MALFORMED_TOKENS, hs256_token, unsigned_none_token
from tests.support.database import count_rows_async
from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.timing import wait_until_async
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


async def models(proxy: InProcessProxy, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await proxy.client.get("/api/llm/models", headers=headers)


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
async def test_refused_tokens_are_401_with_a_reason(proxy: InProcessProxy, case: str,
                                                    mint: Callable[[], str | None],
                                                    reason: str) -> None:
    response = await models(proxy, mint())
    assert response.status_code == 401, case
    assert response.json()["reason"] == reason
    assert response.headers["www-authenticate"].startswith("Bearer")


async def audited_refusals(proxy: InProcessProxy, request_id: str, reason: str) -> int:
    return await count_rows_async(proxy.database_url,
                                  'SELECT count(*) FROM audit_log WHERE id = $1 AND status = 401 '
                                  'AND "user" IS NULL AND error LIKE $2', request_id,
                                  f"auth: {reason}: %")


@pytest.mark.parametrize(("case", "mint", "reason"), MALFORMED_TOKENS,
                         ids=[c[0] for c in MALFORMED_TOKENS])
async def test_malformed_tokens_are_401_with_a_reason_counted_and_audited(
    proxy: InProcessProxy, case: str, mint: Callable[[], str], reason: str
) -> None:
    failures = await proxy.counted("llm_proxy_auth_failures_total", reason=reason)
    response = await models(proxy, mint())
    assert response.status_code == 401, f"{case}: {response.status_code} {response.text[:300]}"
    body = response.json()
    assert body["reason"] == reason
    assert response.headers["www-authenticate"] == (
        f'Bearer error="invalid_token", reason="{reason}"')
    # The message names the problem without echoing what the token carried at length.
    assert body["error"].isprintable() and 0 < len(body["error"]) <= 200, body["error"]
    assert await proxy.counted("llm_proxy_auth_failures_total", reason=reason) == failures + 1
    request_id = response.headers["x-request-id"]

    async def audited_once() -> bool:
        return await audited_refusals(proxy, request_id, reason) == 1

    await wait_until_async(audited_once)


async def test_a_valid_token_minted_elsewhere_is_accepted(proxy: InProcessProxy) -> None:
    assert (await models(proxy, make_token(sub="dave"))).status_code == 200


async def test_small_clock_skew_is_tolerated(proxy: InProcessProxy) -> None:
    assert (await models(proxy, make_token(ttl=-5))).status_code == 200


async def test_every_route_but_status_needs_a_token(proxy: InProcessProxy) -> None:
    client = proxy.client
    assert (await client.get("/api/llm/status")).status_code == 200
    calls = [("POST", "/api/llm/generate"), ("POST", "/api/llm/chat"),
             ("GET", "/api/llm/models"), ("GET", "/api/llm/conversations"),
             ("GET", "/api/llm/conversations/abc"), ("DELETE", "/api/llm/conversations/abc"),
             ("POST", "/api/admin/models/pull"), ("GET", "/api/admin/models/llama3.2"),
             ("DELETE", "/api/admin/models/llama3.2")]
    for method, path in calls:
        response = await client.request(method, path, json={"model": "llama3.2", "prompt": "x"})
        assert response.status_code == 401, f"{method} {path}"


async def test_users_get_403_from_admin_routes(proxy: InProcessProxy) -> None:
    client = proxy.client
    user = auth("eve", "user")
    assert (await client.get("/api/admin/models/llama3.2", headers=user)).status_code == 403
    assert (await client.delete("/api/admin/models/llama3.2", headers=user)).status_code == 403
    pull = await client.post("/api/admin/models/pull", headers=user, json={"model": "gemma3:270m"})
    assert pull.status_code == 403
    assert pull.json() == {"error": "this route requires the admin role"}
    admin = await client.get("/api/admin/models/llama3.2", headers=auth("root", "admin"))
    assert admin.status_code == 200


@pytest.fixture(scope="module")
async def audience_proxy(make_proxy: MakeProxy) -> InProcessProxy:
    return await make_proxy(jwt_audience="llm-proxy", jwt_issuer="https://idp.example")


async def test_audience_and_issuer_are_checked_when_configured(
        audience_proxy: InProcessProxy) -> None:
    good = make_token(aud="llm-proxy", iss="https://idp.example")
    assert (await models(audience_proxy, good)).status_code == 200
    for token, reason in [
        (make_token(aud="other", iss="https://idp.example"), "audience"),
        (make_token(iss="https://idp.example"), "claims"),
        (make_token(aud="llm-proxy", iss="https://evil.example"), "issuer"),
    ]:
        response = await models(audience_proxy, token)
        assert response.status_code == 401
        assert response.json()["reason"] == reason


@pytest.fixture(scope="module")
async def rsa_proxy(make_proxy: MakeProxy) -> InProcessProxy:
    # Both families allowed: the HS/RS confusion attack would need exactly this configuration.
    return await make_proxy(jwt_algorithms="RS256,ES256,HS256", jwt_public_key=pem_public(RSA_KEY))


async def test_rs256_with_a_pem_public_key(rsa_proxy: InProcessProxy) -> None:
    assert (await models(rsa_proxy, signed(RSA_KEY, "RS256"))).status_code == 200
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    response = await models(rsa_proxy, signed(other, "RS256"))
    assert response.status_code == 401
    assert response.json()["reason"] == "signature"


async def test_public_key_used_as_hmac_secret_is_refused(rsa_proxy: InProcessProxy) -> None:
    # The classic confusion: sign HS256 with the (public) PEM as the HMAC key.
    forged = hs256_token({"alg": "HS256", "typ": "JWT"},
                         {"sub": "mallory", "role": "admin", "exp": int(time.time()) + 600},
                         key=pem_public(RSA_KEY))
    response = await models(rsa_proxy, forged)
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


async def test_es256_with_a_jwks_url(make_proxy: MakeProxy, jwks_server: str) -> None:
    proxy = await make_proxy(jwt_algorithms="ES256", jwt_jwks_url=jwks_server, jwt_secret="")
    assert (await models(proxy, signed(EC_KEY, "ES256", headers={"kid": "k1"}))
            ).status_code == 200
    stranger = ec.generate_private_key(ec.SECP256R1())
    assert (await models(proxy, signed(stranger, "ES256", headers={"kid": "k1"}))
            ).status_code == 401
    hs = await models(proxy, make_token())
    assert hs.status_code == 401
    assert hs.json()["reason"] == "algorithm"
