"""Proxy-managed API keys, in process, on two replicas (two apps) sharing the real Postgres and
Redis: made by an admin or by a user, accepted on every dialect, narrowed to their models and
limits, named in the audit log, and refused on the other replica within a second of being
revoked, rotated or expiring. (The WebSocket: tests/proxy/test_ws.py.)"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.database import count_rows_async
from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.timing import wait_until_async
from tests.support.tokens import admin_auth, auth

pytestmark = [pytest.mark.usefixtures("sim"), pytest.mark.postgres]

REDIS = "redis://127.0.0.1:6379/0"
# The promise: a revocation on one replica is in force on every replica within a second.
REVOCATION_BUDGET = 1.0


@pytest.fixture(scope="module")
def shared_database(postgres_url: str) -> str:
    return postgres_url


@pytest.fixture(scope="module")
async def replicas(make_proxy: MakeProxy, shared_database: str
                   ) -> tuple[InProcessProxy, InProcessProxy]:
    settings = {"database_url": shared_database, "redis_url": REDIS}
    return await make_proxy(**settings), await make_proxy(**settings)


async def create_key(proxy: InProcessProxy, **body: Any) -> dict[str, Any]:
    response = await proxy.client.post("/api/admin/keys", headers=admin_auth(),
                                       json={"name": "test key", "owner": "kim", **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# One generation in each dialect: (path, body).
DIALECTS = {
    "llm": ("/api/llm/generate", {"model": "llama3.2", "prompt": "hi", "stream": False,
                                  "options": {"num_predict": 2}}),
    "openai": ("/v1/chat/completions", {"model": "llama3.2", "max_tokens": 2,
                                        "messages": [{"role": "user", "content": "hi"}]}),
    "ollama": ("/ollama/api/chat", {"model": "llama3.2", "stream": False,
                                    "options": {"num_predict": 2},
                                    "messages": [{"role": "user", "content": "hi"}]}),
}


async def generate(proxy: InProcessProxy, secret: str, dialect: str = "llm",
                   **body: Any) -> httpx.Response:
    path, default = DIALECTS[dialect]
    return await proxy.client.post(path, headers=bearer(secret), json={**default, **body})


def refusal_message(dialect: str, response: httpx.Response) -> str:
    """The message of a 401 in the dialect's own error shape, checking that shape."""
    assert response.status_code == 401, response.text
    body = response.json()
    if dialect == "openai":
        assert body["error"]["type"] == "authentication_error"
        message: str = body["error"]["message"]
        return message
    assert isinstance(body["error"], str)
    return str(body["error"])


async def refused_after_cache(proxy: InProcessProxy, secret: str) -> httpx.Response:
    """The answer to `secret` once `proxy` may no longer remember it: a key is kept for at most
    PROXY_REVOCATION_REFRESH_SECONDS (at most 1 s, the settings refuse more). Waiting that long
    rather than timing a poll holds on a machine too busy to answer quickly."""
    refresh = proxy.app.state.proxy.settings.proxy_revocation_refresh_seconds
    assert refresh <= REVOCATION_BUDGET
    await asyncio.sleep(refresh)
    response = await generate(proxy, secret)
    assert response.status_code == 401, response.text
    return response


async def test_a_new_key_is_shown_once_and_stored_only_as_its_hash(
        replicas: tuple[InProcessProxy, InProcessProxy], shared_database: str) -> None:
    a, _ = replicas
    created = await create_key(a, name="ci")
    secret = created["secret"]
    assert secret.startswith("sk-llm-") and len(secret) >= len("sk-llm-") + 43
    assert secret.startswith(created["prefix"]) and len(created["prefix"]) < 16
    assert created["owner"] == "kim" and created["role"] == "user"
    assert created["created_by"] == "root"
    listed = (await a.client.get("/api/admin/keys?owner=kim", headers=admin_auth())).json()
    mine = [k for k in listed["keys"] if k["id"] == created["id"]]
    assert len(mine) == 1
    assert "secret" not in mine[0] and "secret_sha256" not in mine[0]
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert await count_rows_async(shared_database, "SELECT count(*) FROM api_keys WHERE id = $1 "
                                  "AND secret_sha256 = $2", created["id"], digest) == 1
    conn = await asyncpg.connect(shared_database.replace("+asyncpg", ""))
    try:
        row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", created["id"])
    finally:
        await conn.close()
    assert secret not in {str(value) for value in row.values()}


@pytest.mark.parametrize("dialect", list(DIALECTS))
async def test_a_key_works_on_every_dialect_and_the_audit_names_it(
        replicas: tuple[InProcessProxy, InProcessProxy], shared_database: str,
        dialect: str) -> None:
    a, b = replicas
    created = await create_key(a)
    response = await generate(b, created["secret"], dialect)
    assert response.status_code == 200, response.text

    async def audited() -> int:
        return await count_rows_async(
            shared_database, "SELECT count(*) FROM audit_log WHERE api_key_id = $1 AND "
            "\"user\" = $2 AND status = 200", created["id"], "kim")

    await wait_until_async(audited, timeout=10)


async def test_model_lists_and_the_models_route_take_the_key(
        replicas: tuple[InProcessProxy, InProcessProxy]) -> None:
    _, b = replicas
    created = await create_key(b, allowed_models=["llama3.2"])
    headers = bearer(created["secret"])
    models = (await b.client.get("/v1/models", headers=headers)).json()["data"]
    assert [m["id"] for m in models] == ["llama3.2:latest"]
    tags = (await b.client.get("/ollama/api/tags", headers=headers)).json()["models"]
    assert [m["name"] for m in tags] == ["llama3.2:latest"]


@pytest.mark.parametrize("dialect", list(DIALECTS))
async def test_a_keys_model_allowlist_is_enforced(
        replicas: tuple[InProcessProxy, InProcessProxy], dialect: str) -> None:
    a, _ = replicas
    created = await create_key(a, allowed_models=["mistral"])
    assert (await generate(a, created["secret"], dialect, model="mistral")).status_code == 200
    refused = await generate(a, created["secret"], dialect)
    assert refused.status_code == 403
    assert "model 'llama3.2' is not allowed for this API key (allowed: mistral)" in refused.text


async def test_a_keys_rate_limit_is_its_own_besides_its_owners(
        replicas: tuple[InProcessProxy, InProcessProxy]) -> None:
    a, b = replicas
    created = await create_key(a, owner="rita", rate_limit_per_minute=2)
    # The key's window is shared by the replicas (Redis), as the owner's is.
    assert (await generate(a, created["secret"])).status_code == 200
    assert (await generate(b, created["secret"])).status_code == 200
    refused = await generate(a, created["secret"])
    assert refused.status_code == 429
    assert refused.json()["error"] == ("rate limit exceeded for this API key: 2 requests per "
                                       "minute")
    # The owner's own token is not held to the key's limit.
    owner = await a.client.post("/api/llm/generate", headers=auth("rita"),
                                json=DIALECTS["llm"][1])
    assert owner.status_code == 200


@pytest.mark.parametrize("dialect", list(DIALECTS))
async def test_a_key_revoked_on_one_replica_is_refused_on_the_other_within_a_second(
        replicas: tuple[InProcessProxy, InProcessProxy], dialect: str) -> None:
    a, b = replicas
    created = await create_key(a)
    # Replica B has looked the key up, so it would answer from what it remembers.
    assert (await generate(b, created["secret"], dialect)).status_code == 200
    revoked = await a.client.delete(f"/api/admin/keys/{created['id']}", headers=admin_auth())
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    # On the replica that revoked it: at once.
    assert (await generate(a, created["secret"])).status_code == 401
    # On the other: B remembers a key for at most PROXY_REVOCATION_REFRESH_SECONDS (at most 1 s,
    # the settings refuse more), so its first request once that has passed since the
    # revocation is refused, however slowly this machine runs.
    await refused_after_cache(b, created["secret"])
    response = await generate(b, created["secret"], dialect)
    assert refusal_message(dialect, response) == "API key has been revoked"
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token", ' \
                                                   'reason="revoked"'



async def test_a_rotated_keys_old_secret_is_refused_and_the_new_one_works(
        replicas: tuple[InProcessProxy, InProcessProxy]) -> None:
    a, b = replicas
    created = await create_key(a, allowed_models=["llama3.2"], concurrency_limit=3)
    assert (await generate(b, created["secret"])).status_code == 200
    later = datetime(2099, 1, 1, tzinfo=UTC)
    rotated = await a.client.post(f"/api/admin/keys/{created['id']}/rotate",
                                  headers=admin_auth(), json={"expires_at": later.isoformat()})
    assert rotated.status_code == 200
    fresh = rotated.json()
    assert fresh["id"] == created["id"] and fresh["secret"] != created["secret"]
    assert datetime.fromisoformat(fresh["expires_at"]) == later
    assert fresh["allowed_models"] == ["llama3.2"] and fresh["concurrency_limit"] == 3
    response = await refused_after_cache(b, created["secret"])
    assert response.json()["reason"] == "unknown_key"
    assert (await generate(b, fresh["secret"])).status_code == 200


async def test_an_expired_key_is_refused(replicas: tuple[InProcessProxy, InProcessProxy],
                                         shared_database: str) -> None:
    a, b = replicas
    later = datetime.now(UTC) + timedelta(days=1)
    created = await create_key(a, expires_at=later.isoformat())
    assert (await generate(b, created["secret"])).status_code == 200
    # The clock cannot be moved on, so the key's expiry is: as if a day had passed.
    conn = await asyncpg.connect(shared_database.replace("+asyncpg", ""))
    try:
        await conn.execute("UPDATE api_keys SET expires_at = now() - interval '1 second' "
                           "WHERE id = $1", created["id"])
    finally:
        await conn.close()
    response = await refused_after_cache(b, created["secret"])
    assert response.json()["reason"] == "expired"
    assert response.json()["error"].startswith("API key expired at ")


async def test_me_says_who_a_key_is(replicas: tuple[InProcessProxy, InProcessProxy]) -> None:
    a, _ = replicas
    created = await create_key(a, owner="ops", role="admin")
    me = await a.client.get("/api/llm/me", headers=bearer(created["secret"]))
    assert me.json() == {"user": "ops", "role": "admin", "api_key_id": created["id"]}
    me = await a.client.get("/api/llm/me", headers=auth("kim"))
    assert me.json() == {"user": "kim", "role": "user", "api_key_id": None}


async def test_a_made_up_key_is_refused(replicas: tuple[InProcessProxy, InProcessProxy]
                                        ) -> None:
    a, _ = replicas
    response = await generate(a, "sk-llm-" + "A" * 43)
    assert response.status_code == 401
    assert response.json() == {"error": "API key is not valid", "reason": "unknown_key"}


async def test_a_user_key_has_no_admin_rights_and_an_admin_key_has_them_when_asked(
        replicas: tuple[InProcessProxy, InProcessProxy]) -> None:
    a, _ = replicas
    made_by_admin = await create_key(a, owner="root")
    assert made_by_admin["role"] == "user"
    refused = await a.client.get("/api/admin/usage", headers=bearer(made_by_admin["secret"]))
    assert refused.status_code == 403
    admin_key = await create_key(a, owner="ops", role="admin")
    allowed = await a.client.get("/api/admin/usage", headers=bearer(admin_key["secret"]))
    assert allowed.status_code == 200
    # Not even an admin key manages keys: a leaked key must not make itself a successor.
    minted = await a.client.post("/api/admin/keys", headers=bearer(admin_key["secret"]),
                                 json={"name": "successor"})
    assert minted.status_code == 403
    assert minted.json()["error"] == ("API keys are managed with a signed-in token (JWT), not "
                                      "with an API key")


async def test_last_used_is_recorded(replicas: tuple[InProcessProxy, InProcessProxy],
                                     shared_database: str) -> None:
    a, _ = replicas
    created = await create_key(a)
    assert created["last_used_at"] is None
    assert (await generate(a, created["secret"])).status_code == 200

    async def recorded() -> int:
        return await count_rows_async(shared_database, "SELECT count(*) FROM api_keys WHERE "
                                      "id = $1 AND last_used_at IS NOT NULL", created["id"])

    await wait_until_async(recorded, timeout=10)


async def test_bad_key_settings_are_refused_and_change_nothing(
        replicas: tuple[InProcessProxy, InProcessProxy], shared_database: str) -> None:
    a, _ = replicas
    before = await count_rows_async(shared_database, "SELECT count(*) FROM api_keys")
    for body, message in [
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at must be in the future"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute: Input should be greater than"),
        ({"allowed_models": ["a b"]}, "allowed_models.0: String should match pattern"),
        ({"role": "root"}, "role: Input should be 'user' or 'admin'"),
        ({"name": " "}, "name must be printable and not blank"),
        ({"secret": "sk-llm-mine"}, "secret: Extra inputs are not permitted"),
    ]:
        response = await a.client.post("/api/admin/keys", headers=admin_auth(),
                                        json={"name": "bad", **body})
        assert response.status_code == 422, body
        assert message in response.json()["error"], response.json()
    assert await count_rows_async(shared_database, "SELECT count(*) FROM api_keys") == before


async def test_users_manage_their_own_keys_only_where_the_operator_allows(
        replicas: tuple[InProcessProxy, InProcessProxy], make_proxy: MakeProxy,
        shared_database: str) -> None:
    a, _ = replicas
    refused = await a.client.post("/api/llm/keys", headers=auth("uma"), json={"name": "mine"})
    assert refused.status_code == 403
    assert "PROXY_USER_KEYS" in refused.json()["error"]

    proxy = await make_proxy(database_url=shared_database, redis_url=REDIS,
                             proxy_user_keys=True)
    made = await proxy.client.post("/api/llm/keys", headers=auth("uma"),
                                   json={"name": "mine", "allowed_models": ["llama3.2"]})
    assert made.status_code == 201, made.text
    key = made.json()
    assert (key["owner"], key["role"], key["created_by"]) == ("uma", "user", "uma")
    # No admin key through the users' route.
    admin = await proxy.client.post("/api/llm/keys", headers=auth("uma"),
                                    json={"name": "x", "role": "admin"})
    assert admin.status_code == 422
    # Another user sees, rotates and revokes none of uma's keys.
    others = await proxy.client.get("/api/llm/keys", headers=auth("otto"))
    assert others.json() == {"keys": []}
    for method, path in [("POST", f"/api/llm/keys/{key['id']}/rotate"),
                         ("DELETE", f"/api/llm/keys/{key['id']}")]:
        response = await proxy.client.request(method, path, headers=auth("otto"))
        assert response.status_code == 404
        assert response.json() == {"error": f"API key '{key['id']}' not found"}
    mine = (await proxy.client.get("/api/llm/keys", headers=auth("uma"))).json()["keys"]
    assert [k["id"] for k in mine] == [key["id"]]
    # The key acts as uma; it manages no keys itself.
    assert (await generate(proxy, key["secret"])).status_code == 200
    listed = await proxy.client.get("/api/llm/keys", headers=bearer(key["secret"]))
    assert listed.status_code == 403
    revoked = await proxy.client.delete(f"/api/llm/keys/{key['id']}", headers=auth("uma"))
    assert revoked.status_code == 200
    assert (await generate(proxy, key["secret"])).status_code == 401
    rotate = await proxy.client.post(f"/api/llm/keys/{key['id']}/rotate", headers=auth("uma"))
    assert rotate.status_code == 409
