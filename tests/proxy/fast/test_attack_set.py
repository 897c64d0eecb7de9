"""The attack set, in process: what an outsider (or a curious user) sends at the proxy, and what
it must answer. Every attack gets its documented refusal (401/403/413/422/429), never a 5xx;
every refusal is audited (a row under the server's own request id, with that status) and counted
(`llm_proxy_requests_total`, and `llm_proxy_auth_failures_total` for tokens).

What needs a real server (raw sockets, a stalled upload, the server's header cap, its log, the
WebSocket) is in tests/proxy/test_attack_set.py; the defects each attack once exposed have their
own regression tests beside the code they fixed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.proxy.forged_tokens import BAD_TOKENS, hs256_attack
from tests.support.database import count_rows_async
from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.timing import wait_until_async
from tests.support.tokens import admin_auth, auth

pytestmark = pytest.mark.usefixtures("sim")

GENERATE = "/api/llm/generate"
FLOODER = "flooder"
MAX_BODY = 64 * 1024

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


@pytest.fixture(scope="module")
async def target(make_proxy: MakeProxy) -> InProcessProxy:
    proxy = await make_proxy(proxy_max_body_bytes=MAX_BODY,
                             proxy_rate_limit_users={FLOODER: "2/minute"})
    for name, source in HOSTILE_TEMPLATES.items():
        response = await proxy.client.post("/api/admin/templates", headers=admin_auth(),
                                           json={"name": name, "template": source})
        assert response.status_code == 201, response.text
    return proxy


# A well-signed control case, so the table cannot pass by refusing everything.
GOOD_TOKEN = hs256_attack


@dataclass
class Refusal:
    response: httpx.Response
    status: int

    @property
    def request_id(self) -> str:
        return self.response.headers["x-request-id"]


async def assert_refused_audited_counted(target: InProcessProxy, refusal: Refusal,
                                         counted_before: float) -> None:
    response = refusal.response
    assert response.status_code == refusal.status, response.text
    assert response.status_code < 500
    assert "error" in response.json(), response.text

    async def audited() -> bool:
        return await count_rows_async(target.database_url, "SELECT count(*) FROM audit_log "
                                      "WHERE id = $1 AND status = $2", refusal.request_id,
                                      refusal.status) == 1

    async def counted() -> bool:
        return await requests_counted(target, refusal.status) > counted_before

    await wait_until_async(audited, timeout=15)
    await wait_until_async(counted)


async def requests_counted(target: InProcessProxy, status: int) -> float:
    return await target.counted("llm_proxy_requests_total", status=str(status))


async def post(target: InProcessProxy, body: object = None,
               headers: dict[str, Any] | None = None, path: str = GENERATE,
               content: bytes | None = None) -> httpx.Response:
    if content is not None:
        return await target.client.post(path, headers=headers or auth("mallory"),
                                        content=content)
    return await target.client.post(path, headers=headers or auth("mallory"), json=body)


def generate_body(**extra: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "prompt": "hello", "stream": False,
            "options": {"num_predict": 2}, **extra}


# -- JWT ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("case", "mint", "reason"), BAD_TOKENS, ids=[c[0] for c in BAD_TOKENS])
async def test_a_bad_token_is_401_with_its_reason_audited_and_counted(
    target: InProcessProxy, case: str, mint: Callable[[], str], reason: str
) -> None:
    before = await requests_counted(target, 401)
    failures_before = await target.counted("llm_proxy_auth_failures_total", reason=reason)
    # Bytes: a header value that is not ASCII is sent as it is (latin-1 on the wire).
    header = f"Bearer {mint()}".encode("latin-1", errors="replace")
    response = await post(target, generate_body(), headers={"Authorization": header})
    assert response.json().get("reason") == reason, (case, response.text)
    assert response.headers["www-authenticate"].startswith("Bearer")
    await assert_refused_audited_counted(target, Refusal(response, 401), before)
    assert await target.metric("llm_proxy_auth_failures_total", reason=reason) > failures_before


async def test_the_same_forger_with_the_real_key_and_plain_headers_is_accepted(
    target: InProcessProxy,
) -> None:
    response = await post(target, generate_body(),
                          headers={"Authorization": f"Bearer {GOOD_TOKEN()}"})
    assert response.status_code == 200, response.text


async def test_a_user_token_on_an_admin_route_is_403_audited_and_counted(
        target: InProcessProxy) -> None:
    before = await requests_counted(target, 403)
    response = await post(target, {"model": "gemma3:270m"}, path="/api/admin/models/pull")
    await assert_refused_audited_counted(target, Refusal(response, 403), before)


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
async def test_a_bad_body_is_refused_audited_and_counted(target: InProcessProxy, case: str,
                                                         make: Callable[[], bytes],
                                                         status: int) -> None:
    before = await requests_counted(target, status)
    response = await post(target, content=make())
    await assert_refused_audited_counted(target, Refusal(response, status), before)


# -- headers ------------------------------------------------------------------------------------

async def test_a_reused_request_id_names_nothing_the_server_trusts(
        target: InProcessProxy) -> None:
    user = f"replayer-{uuid.uuid4().hex[:6]}"
    headers = {**auth(user), "X-Request-ID": "same-id-every-time"}
    responses = [await post(target, generate_body(), headers=headers) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    ids = {r.headers["x-request-id"] for r in responses}
    assert len(ids) == 3 and "same-id-every-time" not in ids

    async def three_rows() -> bool:
        return await count_rows_async(target.database_url, 'SELECT count(*) FROM audit_log '
                                      'WHERE "user" = $1', user) == 3

    await wait_until_async(three_rows)


# -- limits -------------------------------------------------------------------------------------

async def test_past_the_rate_limit_is_429_audited_and_counted(target: InProcessProxy) -> None:
    headers = auth(FLOODER)
    for _ in range(2):
        assert (await post(target, generate_body(), headers=headers)).status_code == 200
    before = await requests_counted(target, 429)
    response = await post(target, generate_body(), headers=headers)
    assert int(response.headers["retry-after"]) > 0
    await assert_refused_audited_counted(target, Refusal(response, 429), before)


# -- templates ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("template", "variables"), TEMPLATE_ATTACKS,
                         ids=[t for t, _ in TEMPLATE_ATTACKS])
async def test_a_hostile_template_is_422_audited_and_counted(target: InProcessProxy,
                                                            template: str,
                                                            variables: dict[str, str]) -> None:
    before = await requests_counted(target, 422)
    response = await post(target, {"model": "llama3.2", "template": template,
                                   "variables": variables, "stream": False})
    await assert_refused_audited_counted(target, Refusal(response, 422), before)


@pytest.mark.parametrize("kind", list(UNSTORABLE_TEMPLATES))
async def test_a_template_reaching_outside_itself_cannot_be_stored(target: InProcessProxy,
                                                                  kind: str) -> None:
    before = await requests_counted(target, 422)
    response = await post(target, {"name": f"attack-store-{kind}",
                                   "template": UNSTORABLE_TEMPLATES[kind]},
                          headers=admin_auth(), path="/api/admin/templates")
    await assert_refused_audited_counted(target, Refusal(response, 422), before)
