"""JWTs refused although they verify: the deny-list (by `jti`, and a user's tokens issued before
a time), shared by two replicas (two apps) on the real Postgres and in force on the other
replica within a second; the longest lifetime a token may have (JWT_MAX_LIFETIME); and the
role read from a configurable claim, lists of roles or groups included (JWT_ROLE_CLAIM)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from tests.support.database import count_rows_async
from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.timing import wait_until_async
from tests.support.tokens import admin_auth, make_token

pytestmark = pytest.mark.usefixtures("sim")

REVOCATION_BUDGET = 1.0
BODY = {"model": "llama3.2", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}


@pytest.fixture(scope="module")
async def replicas(make_proxy: MakeProxy, postgres_url: str
                   ) -> tuple[InProcessProxy, InProcessProxy]:
    # No Redis: the deny-list is shared through the database alone.
    return (await make_proxy(database_url=postgres_url),
            await make_proxy(database_url=postgres_url))


async def generate(proxy: InProcessProxy, token: str, path: str = "/api/llm/generate"
                   ) -> httpx.Response:
    return await proxy.client.post(path, headers={"Authorization": f"Bearer {token}"},
                                   json=BODY)


async def deny(proxy: InProcessProxy, **body: Any) -> httpx.Response:
    return await proxy.client.post("/api/admin/token-denials", headers=admin_auth(), json=body)


async def refused_after_reload(proxy: InProcessProxy, token: str, since: float
                               ) -> httpx.Response:
    """The answer to `token` once `proxy` has reloaded its deny-list from a read that began
    after `since` (time.monotonic()). Its background task does that every
    PROXY_REVOCATION_REFRESH_SECONDS (at most 1 s, the settings refuse more): waiting for the
    reload itself, rather than timing it, holds on a machine too busy to keep to the period."""
    denials = proxy.app.state.proxy.verifier.denials
    assert proxy.app.state.proxy.settings.proxy_revocation_refresh_seconds <= REVOCATION_BUDGET
    await wait_until_async(lambda: denials.loaded_at > since, timeout=30)
    return await generate(proxy, token)


@pytest.mark.postgres
async def test_a_jti_denied_on_one_replica_is_refused_on_the_other_within_a_second(
        replicas: tuple[InProcessProxy, InProcessProxy]) -> None:
    a, b = replicas
    jti = uuid.uuid4().hex
    token, other = make_token("dora", jti=jti), make_token("dora", jti=uuid.uuid4().hex)
    assert (await generate(b, token)).status_code == 200
    since = time.monotonic()
    denied = await deny(a, jti=jti, reason="laptop stolen")
    assert denied.status_code == 201, denied.text
    assert denied.json()["expires_at"] is not None  # kept only while such a token could live
    assert (await generate(a, token)).status_code == 401
    refused = await refused_after_reload(b, token, since)
    assert refused.status_code == 401
    assert refused.json() == {"error": "token has been revoked", "reason": "denied"}
    # In the other dialects' shapes too; and the user's other tokens still work.
    v1 = await generate(b, token, "/v1/completions")
    assert v1.status_code == 401
    assert v1.json()["error"]["message"] == "token has been revoked"
    assert v1.json()["error"]["code"] == "denied"
    ollama = await generate(b, token, "/ollama/api/generate")
    assert ollama.status_code == 401 and ollama.json() == {"error": "token has been revoked"}
    assert (await generate(b, other)).status_code == 200
    listed = (await b.client.get("/api/admin/token-denials", headers=admin_auth())).json()
    assert [d["reason"] for d in listed["denials"] if d["jti"] == jti] == ["laptop stolen"]


@pytest.mark.postgres
async def test_a_users_tokens_issued_before_a_time_are_refused(
        replicas: tuple[InProcessProxy, InProcessProxy], postgres_url: str) -> None:
    a, b = replicas
    now = int(time.time())
    old = make_token("eve", iat=now - 100, ttl=600)
    without_iat = make_token("eve", iat=None)
    assert (await generate(b, old)).status_code == 200
    cut_off = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 50))
    since = time.monotonic()
    assert (await deny(a, subject="eve", issued_before=cut_off)).status_code == 201
    refused = await refused_after_reload(b, old, since)
    assert refused.status_code == 401
    assert refused.json()["reason"] == "denied"
    assert "tokens of this user issued before" in refused.json()["error"]
    assert (await generate(b, make_token("eve"))).status_code == 200
    assert (await generate(b, make_token("someone-else", iat=now - 100))).status_code == 200
    # Without `iat` a token cannot show it came after the cut-off (and is refused anyway
    # while JWT_MAX_LIFETIME is set).
    assert (await generate(b, without_iat)).status_code == 401
    assert await count_rows_async(postgres_url, "SELECT count(*) FROM token_denials WHERE "
                                  "subject = $1", "eve") == 1


async def test_bad_denials_are_refused_and_change_nothing(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    for body, message in [
        ({}, "give either `jti` (one token) or `subject` (a user's tokens)"),
        ({"jti": "a", "subject": "b"}, "give either `jti`"),
        ({"jti": "a", "issued_before": "2020-01-01T00:00:00Z"}, "`issued_before` goes with"),
        ({"subject": "b", "issued_before": "2999-01-01T00:00:00Z"},
         "issued_before must not be in the future"),
    ]:
        response = await deny(proxy, **body)
        assert response.status_code == 422, body
        assert message in response.json()["error"]
    listed = await proxy.client.get("/api/admin/token-denials", headers=admin_auth())
    assert listed.json() == {"denials": []}
    user = await proxy.client.post("/api/admin/token-denials",
                                   headers={"Authorization": f"Bearer {make_token('u')}"},
                                   json={"jti": "x"})
    assert user.status_code == 403


async def test_a_token_living_longer_than_the_maximum_is_refused(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    assert (await generate(proxy, make_token(ttl=86_400))).status_code == 200
    too_long = await generate(proxy, make_token(ttl=86_401))
    assert too_long.status_code == 401
    assert too_long.json() == {
        "error": "token lifetime (86401 s from 'iat' to 'exp') exceeds JWT_MAX_LIFETIME "
                 "(86400 s)", "reason": "lifetime"}
    no_iat = await generate(proxy, make_token(iat=None))
    assert no_iat.status_code == 401
    assert no_iat.json()["reason"] == "lifetime"
    assert "no 'iat' claim" in no_iat.json()["error"]


async def test_the_lifetime_check_can_be_set_or_turned_off(make_proxy: MakeProxy) -> None:
    short = await make_proxy(jwt_max_lifetime=600)
    assert (await generate(short, make_token(ttl=601))).status_code == 401
    off = await make_proxy(jwt_max_lifetime=0)
    assert (await generate(off, make_token(ttl=10 * 86_400))).status_code == 200
    assert (await generate(off, make_token(iat=None))).status_code == 200


async def on_an_admin_route(proxy: InProcessProxy, **claims: Any) -> httpx.Response:
    token = make_token("grace", **{"role": None, **claims})
    return await proxy.client.get("/api/admin/token-denials",
                                  headers={"Authorization": f"Bearer {token}"})


async def admin_route(proxy: InProcessProxy, **claims: Any) -> int:
    return (await on_an_admin_route(proxy, **claims)).status_code


async def test_the_role_comes_from_a_list_claim(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(jwt_role_claim="groups", jwt_admin_role="llm-admins")
    assert await admin_route(proxy, groups=["staff", "llm-admins"]) == 200
    token = make_token("grace", role=None, groups=["llm-admins"])
    me = await proxy.client.get("/api/llm/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json() == {"user": "grace", "role": "admin", "api_key_id": None}
    assert await admin_route(proxy, groups=["staff"]) == 403
    assert await admin_route(proxy) == 403  # no claim: a user
    # The `role` claim means nothing any more: only the configured claim counts.
    assert await admin_route(proxy, role="admin") == 403
    response = await on_an_admin_route(proxy, groups=[1, 2])
    assert response.status_code == 401
    assert response.json()["error"] == ("token 'groups' must be a string or a list of strings, "
                                        "not a list (JWT_ROLE_CLAIM)")


async def test_the_role_claim_may_be_nested_or_a_string(make_proxy: MakeProxy) -> None:
    nested = await make_proxy(jwt_role_claim="realm_access.roles")
    assert await admin_route(nested, realm_access={"roles": ["admin", "offline"]}) == 200
    assert await admin_route(nested, realm_access={"roles": ["offline"]}) == 403
    named = await make_proxy(jwt_role_claim="llm_role", jwt_admin_role="operator")
    assert await admin_route(named, llm_role="operator") == 200
    assert await admin_route(named, llm_role="user") == 403
    response = await on_an_admin_route(named, llm_role="root")
    assert response.status_code == 401
    assert response.json()["error"] == ("token 'llm_role' must be one of ['user', 'operator'] "
                                        "(JWT_ROLE_CLAIM, JWT_ADMIN_ROLE)")
