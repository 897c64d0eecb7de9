"""Admin analytics, in process, on SQLite and on the real Postgres: usage, costs, the audit log.

One module-scoped batch of traffic (alice and bob on two models, an unknown model, a rate-limited
user) is sent first; every number the admin API reports is then checked against the `usage` the
proxy itself returned to those callers. Tests that need other settings (cost models, stored
prompts) run their own app on the same database and use users of their own.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import sim_stats
from tests.support.timing import wait_until_async
from tests.support.tokens import admin_auth, auth, make_token


def short(model: str) -> str:
    """The audit log stores full model names (`llama3.2:latest`); the tests send short ones."""
    return model.removesuffix(":latest")


TOKEN_PRICES = {"llama3.2": {"prompt": 1.0, "completion": 2.0},
                "*": {"prompt": 0.5, "completion": 0.5}}




async def admin_get(proxy: InProcessProxy, path: str, **params: Any) -> httpx.Response:
    return await proxy.client.get(path, headers=admin_auth(), params=params)


async def audit(proxy: InProcessProxy, **params: Any) -> list[dict[str, Any]]:
    response = await admin_get(proxy, "/api/admin/audit", limit=500, **params)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


async def wait_for_rows(proxy: InProcessProxy, user: str, count: int, timeout: float = 10.0
                        ) -> list[dict[str, Any]]:
    """Poll the audit API until `user` has exactly `count` rows (the writer flushes in batches)."""
    found: list[list[dict[str, Any]]] = [[]]

    async def check() -> bool:
        found[0] = await audit(proxy, user=user)
        assert len(found[0]) <= count, f"{user} has more rows than requests: {found[0]}"
        return len(found[0]) == count

    await wait_until_async(check, timeout)
    return found[0]


async def report(proxy: InProcessProxy, path: str = "/api/admin/usage", **params: Any
                 ) -> dict[str, Any]:
    response = await admin_get(proxy, path, **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@dataclass
class Sent:
    """One request as its caller saw it."""

    user: str
    model: str
    endpoint: str
    status: int
    prompt: str
    usage: dict[str, int] | None
    request_id: str


@dataclass
class Traffic:
    sent: list[Sent] = field(default_factory=list)
    start: datetime = field(default_factory=lambda: datetime.now(UTC))
    end: datetime | None = None

    def of(self, user: str, model: str | None = None) -> list[Sent]:
        return [s for s in self.sent if s.user == user and (model is None or s.model == model)]


async def send(proxy: InProcessProxy, user: str | None, model: str, prompt: str, *,
               stream: bool = False, chat: bool = False, options: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None
               ) -> tuple[httpx.Response, dict[str, int] | None]:
    body: dict[str, Any] = {"model": model, "stream": stream,
                            "options": options or {"num_predict": 4}}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    path = "/api/llm/chat" if chat else "/api/llm/generate"
    response = await proxy.client.post(
        path, json=body, headers=headers if headers is not None else auth(user or "x"))
    usage = None
    if response.status_code == 200:
        final = (json.loads(response.text.splitlines()[-1]) if stream else response.json())
        usage = final["usage"]
    return response, usage


async def record(traffic: Traffic, proxy: InProcessProxy, user: str, model: str, prompt: str,
                 expect: int, **kwargs: Any) -> Sent:
    response, usage = await send(proxy, user, model, prompt, **kwargs)
    assert response.status_code == expect, response.text
    sent = Sent(user, model, "/api/llm/chat" if kwargs.get("chat") else "/api/llm/generate",
                response.status_code, prompt, usage, response.headers["x-request-id"])
    traffic.sent.append(sent)
    return sent


async def audit_by_id(proxy: InProcessProxy, traffic: Traffic) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for user in {s.user for s in traffic.sent}
            for e in await audit(proxy, user=user)}


def tokens(sent: list[Sent], kind: str) -> int:
    return sum(s.usage[kind] for s in sent if s.usage is not None)


@pytest.fixture(scope="module")
async def usage_proxy(make_proxy: MakeProxy, database_url: str) -> InProcessProxy:
    return await make_proxy(database_url=database_url)


@pytest.fixture(scope="module")
async def traffic(usage_proxy: InProcessProxy, make_proxy: MakeProxy, database_url: str
                  ) -> Traffic:
    limited = await make_proxy(database_url=database_url, proxy_rate_limit="2/minute")
    t = Traffic()
    p = usage_proxy
    await record(t, p, "alice", "llama3.2", "alice asks llama", 200, options={"num_predict": 5})
    await record(t, p, "alice", "llama3.2", "alice streams llama", 200, stream=True,
           options={"num_predict": 7})
    await record(t, p, "alice", "mistral", "alice asks mistral", 200)
    await record(t, p, "alice", "ghost-model", "alice asks a ghost", 404)
    await record(t, p, "bob", "mistral", "bob streams mistral", 200, stream=True,
           options={"num_predict": 6})
    await record(t, p, "bob", "llama3.2", "bob asks llama", 200, options={"num_predict": 3})
    await record(t, p, "bob", "llama3.2", "bob chats with llama", 200, chat=True)
    for expect in (200, 200, 429):
        await record(t, limited, "carol", "llama3.2", "carol hurries", expect,
               options={"num_predict": 2})
    t.end = datetime.now(UTC)
    for user in ("alice", "bob", "carol"):
        await wait_for_rows(p, user, len(t.of(user)))
    return t


# -- usage --------------------------------------------------------------------------------------


async def test_usage_by_user_matches_what_the_callers_got(usage_proxy: InProcessProxy,
                                                          traffic: Traffic) -> None:
    body = await report(usage_proxy, group_by="user")
    assert body["group_by"] == ["user"]
    rows = {r["user"]: r for r in body["rows"]}
    expected = {"alice": (4, 1, 0), "bob": (3, 0, 0), "carol": (3, 0, 1)}
    for user, (requests, errors, rate_limited) in expected.items():
        row, sent = rows[user], traffic.of(user)
        assert row["requests"] == requests == len(sent), user
        assert row["prompt_tokens"] == tokens(sent, "prompt_tokens") > 0, user
        assert row["completion_tokens"] == tokens(sent, "completion_tokens") > 0, user
        assert row["errors"] == errors, user
        assert row["rate_limited"] == rate_limited, user
        assert row["cached"] == 0, user
        assert row["mean_latency_ms"] > 0, user
        assert row["p95_latency_ms"] >= row["mean_latency_ms"], user
    assert rows["alice"]["completion_tokens"] == 5 + 7 + 4
    assert rows["carol"]["completion_tokens"] == 2 + 2
    for key in ("requests", "prompt_tokens", "completion_tokens", "errors", "rate_limited"):
        assert body["totals"][key] == sum(r[key] for r in body["rows"]), key


async def test_latency_statistics_come_from_the_successful_rows(usage_proxy: InProcessProxy,
                                                                traffic: Traffic) -> None:
    entries = await audit(usage_proxy, user="alice")
    ok = sorted(e["duration_ms"] for e in entries if e["status"] < 400)
    assert len(ok) == 3
    row = (await report(usage_proxy, group_by="user", user="alice"))["rows"]
    assert len(row) == 1
    assert row[0]["mean_latency_ms"] == pytest.approx(sum(ok) / 3, abs=1e-3)
    assert row[0]["p95_latency_ms"] == pytest.approx(ok[-1])  # nearest rank of 3 values


async def test_usage_by_model(usage_proxy: InProcessProxy, traffic: Traffic) -> None:
    rows = {short(r["model"]): r for r in
            (await report(usage_proxy, group_by="model", user="alice"))["rows"]}
    assert set(rows) == {"llama3.2", "mistral", "ghost-model"}
    llama = traffic.of("alice", "llama3.2")
    assert rows["llama3.2"]["requests"] == 2
    assert rows["llama3.2"]["prompt_tokens"] == tokens(llama, "prompt_tokens")
    assert rows["llama3.2"]["completion_tokens"] == 12
    assert rows["mistral"]["requests"] == 1
    assert rows["mistral"]["completion_tokens"] == 4
    ghost = rows["ghost-model"]
    assert (ghost["requests"], ghost["errors"], ghost["prompt_tokens"]) == (1, 1, 0)
    assert ghost["mean_latency_ms"] is None and ghost["p95_latency_ms"] is None

    everyone = {short(r["model"]): r
                for r in (await report(usage_proxy, group_by="model"))["rows"]}
    all_llama = [s for s in traffic.sent if s.model == "llama3.2"]
    assert everyone["llama3.2"]["requests"] >= len(all_llama)


async def test_usage_by_day(usage_proxy: InProcessProxy, traffic: Traffic) -> None:
    assert traffic.end is not None
    rows = (await report(usage_proxy, group_by="day", user="bob"))["rows"]
    days = {traffic.start.date().isoformat(), traffic.end.date().isoformat()}
    assert {r["day"] for r in rows} <= days
    assert sum(r["requests"] for r in rows) == 3
    assert sum(r["completion_tokens"] for r in rows) == 6 + 3 + 4


async def test_usage_by_user_and_model(usage_proxy: InProcessProxy, traffic: Traffic) -> None:
    body = await report(usage_proxy, group_by=["user", "model"])
    assert body["group_by"] == ["user", "model"]
    rows = {(r["user"], short(r["model"])): r for r in body["rows"]}
    for user in ("alice", "bob", "carol"):
        for model in {s.model for s in traffic.of(user)}:
            sent = traffic.of(user, model)
            row = rows[(user, model)]
            assert row["requests"] == len(sent), (user, model)
            assert row["prompt_tokens"] == tokens(sent, "prompt_tokens"), (user, model)
            assert row["completion_tokens"] == tokens(sent, "completion_tokens"), (user, model)
    assert rows[("carol", "llama3.2")]["rate_limited"] == 1
    assert rows[("alice", "ghost-model")]["errors"] == 1


async def test_usage_by_endpoint(usage_proxy: InProcessProxy, traffic: Traffic) -> None:
    rows = {r["endpoint"]: r for r in
            (await report(usage_proxy, group_by="endpoint", user="bob"))["rows"]}
    assert rows["/api/llm/generate"]["requests"] == 2
    assert rows["/api/llm/chat"]["requests"] == 1
    assert rows["/api/llm/chat"]["completion_tokens"] == 4


async def test_user_filter(usage_proxy: InProcessProxy, traffic: Traffic) -> None:
    body = await report(usage_proxy, group_by="user", user="carol")
    assert [r["user"] for r in body["rows"]] == ["carol"]
    assert body["totals"]["requests"] == 3
    assert (await report(usage_proxy, user="nobody-at-all"))["rows"] == []


async def test_time_range(usage_proxy: InProcessProxy, traffic: Traffic) -> None:
    assert traffic.end is not None
    start = (traffic.start - timedelta(seconds=1)).isoformat()
    end = (traffic.end + timedelta(seconds=1)).isoformat()
    inside = await report(usage_proxy, user="alice", start=start, end=end)
    assert inside["rows"][0]["requests"] == 4
    assert inside["start"] is not None and inside["end"] is not None
    after = (traffic.end + timedelta(seconds=1)).isoformat()
    assert (await report(usage_proxy, user="alice", start=after))["rows"] == []
    before = (traffic.start - timedelta(seconds=1)).isoformat()
    assert (await report(usage_proxy, user="alice", end=before))["rows"] == []
    past = await report(usage_proxy, start="2001-01-01T00:00:00Z", end="2001-02-01T00:00:00Z")
    assert past["rows"] == []
    assert past["totals"]["requests"] == 0
    for path in ("/api/admin/usage", "/api/admin/costs", "/api/admin/audit"):
        for bad_end in (start, (traffic.start - timedelta(days=1)).isoformat()):
            response = await admin_get(usage_proxy, path, start=start, end=bad_end)
            assert response.status_code == 422, (path, response.text)
            assert "end" in response.json()["error"]


async def test_time_range_with_a_utc_offset_is_the_same_instant(usage_proxy: InProcessProxy,
                                                                traffic: Traffic) -> None:
    """`start=…+05:00` names an instant; the database must not compare wall-clock strings."""
    assert traffic.end is not None
    plus_five = timezone(timedelta(hours=5))
    minus_seven = timezone(timedelta(hours=-7))
    start = (traffic.start - timedelta(minutes=30)).astimezone(plus_five).isoformat()
    end = (traffic.end + timedelta(minutes=30)).astimezone(minus_seven).isoformat()
    rows = (await report(usage_proxy, user="alice", start=start, end=end))["rows"]
    assert [r["requests"] for r in rows] == [4], (start, end, rows)
    entries = await audit(usage_proxy, user="alice", start=start, end=end)
    assert len(entries) == 4


async def test_bad_group_by_is_refused(usage_proxy: InProcessProxy) -> None:
    response = await admin_get(usage_proxy, "/api/admin/usage", group_by="prompt")
    assert response.status_code == 422
    assert "group_by" in response.json()["error"]


# -- costs --------------------------------------------------------------------------------------


async def cost_rows(proxy: InProcessProxy, user: str) -> dict[str, dict[str, Any]]:
    body = await report(proxy, "/api/admin/costs", user=user)
    assert body["group_by"] == ["user", "model"]
    return {short(r["model"]): r for r in body["rows"]}


def token_cost(usage: dict[str, int], model: str) -> float:
    price = TOKEN_PRICES.get(model, TOKEN_PRICES["*"])
    return (usage["prompt_tokens"] * price["prompt"]
            + usage["completion_tokens"] * price["completion"]) / 1000


@pytest.fixture(scope="module")
async def token_cost_proxy(make_proxy: MakeProxy, database_url: str) -> InProcessProxy:
    # Shared cache: one user's request must be answered from another's entry (the cached row).
    return await make_proxy(database_url=database_url, proxy_cost_mode="tokens",
                            proxy_cost_currency="EUR", proxy_cost_per_1k_tokens=TOKEN_PRICES,
                            proxy_cache_shared=True)


async def test_token_costs_per_user_and_model(token_cost_proxy: InProcessProxy) -> None:
    p = token_cost_proxy
    prompt = f"what does it cost {uuid.uuid4().hex[:8]}"
    fixed = {"seed": 11, "num_predict": 6}
    plain, plain_usage = await send(p, "tok-plain", "llama3.2", prompt, options=fixed)
    assert plain.headers["x-cache"] == "MISS"
    streamed, stream_usage = await send(p, "tok-stream", "llama3.2", prompt, stream=True,
                                  options=fixed)
    assert streamed.status_code == 200
    cached, cached_usage = await send(p, "tok-cached", "llama3.2", prompt, options=fixed)
    assert cached.headers["x-cache"] == "HIT"
    other, other_usage = await send(p, "tok-other", "mistral", prompt,
                              options={"num_predict": 9})
    assert other.status_code == 200
    # Identical requests: the token counts match, so the costs must too.
    assert plain_usage == stream_usage == cached_usage
    assert plain_usage is not None and other_usage is not None
    for user in ("tok-plain", "tok-stream", "tok-cached", "tok-other"):
        await wait_for_rows(p, user, 1)

    expected = token_cost(plain_usage, "llama3.2")
    assert expected > 0
    plain_row = (await cost_rows(p, "tok-plain"))["llama3.2"]
    stream_row = (await cost_rows(p, "tok-stream"))["llama3.2"]
    assert plain_row["cost"] == pytest.approx(expected, abs=1e-6)
    assert stream_row["cost"] == plain_row["cost"]
    cached_row = (await cost_rows(p, "tok-cached"))["llama3.2"]
    assert (cached_row["cost"], cached_row["cached"]) == (0, 1)
    assert cached_row["completion_tokens"] == plain_usage["completion_tokens"]
    other_row = (await cost_rows(p, "tok-other"))["mistral"]
    assert other_row["cost"] == pytest.approx(token_cost(other_usage, "mistral"), abs=1e-6)

    body = await report(p, "/api/admin/costs", user="tok-plain")
    assert (body["cost_mode"], body["currency"]) == ("tokens", "EUR")
    assert body["totals"]["cost"] == pytest.approx(expected, abs=1e-6)
    # /usage prices with the same model.
    usage_row = (await report(p, group_by="user", user="tok-stream"))["rows"][0]
    assert usage_row["cost"] == stream_row["cost"]


async def test_a_model_costs_the_same_whatever_its_spelling(
        token_cost_proxy: InProcessProxy) -> None:
    """"llama3.2:latest" is the model priced as "llama3.2", not one priced by the "*" rule."""
    p = token_cost_proxy
    _, usage = await send(p, "tok-alias", "llama3.2:latest", "which price applies?",
                    options={"num_predict": 5})
    assert usage is not None
    await wait_for_rows(p, "tok-alias", 1)
    body = await report(p, "/api/admin/costs", user="tok-alias")
    assert body["totals"]["cost"] == pytest.approx(token_cost(usage, "llama3.2"), abs=1e-6)


@pytest.fixture(scope="module")
async def gpu_cost_proxy(make_proxy: MakeProxy, database_url: str) -> InProcessProxy:
    return await make_proxy(database_url=database_url, proxy_cost_mode="gpu_time",
                            proxy_cost_gpu_hour=3.6, proxy_cost_hardware_month=0,
                            proxy_audit_store_prompts=True)


async def test_gpu_time_costs_follow_upstream_time(gpu_cost_proxy: InProcessProxy) -> None:
    p = gpu_cost_proxy
    for user, stream in (("gpu-plain", False), ("gpu-stream", True)):
        response, usage = await send(p, user, "llama3.2", f"gpu time {uuid.uuid4().hex[:6]}",
                               stream=stream, options={"num_predict": 20})
        assert response.status_code == 200 and usage is not None
    for user in ("gpu-plain", "gpu-stream"):
        [entry] = await wait_for_rows(p, user, 1)
        assert entry["upstream_ms"] > 0
        # Ollama's total_duration of 20 tokens at 400/s is at least 50 ms of GPU time.
        assert entry["upstream_ms"] >= 45
        assert entry["upstream_ms"] <= entry["duration_ms"] + 1
        expected = entry["upstream_ms"] / 1000 * 0.001  # 3.6 per hour = 0.001 per second
        body = await report(p, "/api/admin/costs", user=user)
        assert body["cost_mode"] == "gpu_time"
        [row] = body["rows"]
        assert row["cost"] == pytest.approx(expected, abs=1e-6)
        assert row["cost"] > 0


# -- the audit log ------------------------------------------------------------------------------


async def test_audit_filters(usage_proxy: InProcessProxy, traffic: Traffic) -> None:
    alice = await audit(usage_proxy, user="alice")
    assert {e["id"] for e in alice} == {s.request_id for s in traffic.of("alice")}
    assert all(e["user"] == "alice" and e["role"] == "user" for e in alice)

    chats = await audit(usage_proxy, user="bob", endpoint="/api/llm/chat")
    assert [e["id"] for e in chats] == [s.request_id for s in traffic.of("bob")
                                        if s.endpoint == "/api/llm/chat"]
    missing = await audit(usage_proxy, user="alice", status=404)
    assert [(short(e["model"]), e["error"]) for e in missing] == [
        ("ghost-model", "model 'ghost-model' not found")]
    limited = await audit(usage_proxy, status=429)
    assert [e["user"] for e in limited] == ["carol"]
    assert "rate limit" in limited[0]["error"]
    mistral = await audit(usage_proxy, model="mistral")
    assert all(e["model"] == "mistral:latest" for e in mistral)
    assert sorted(e["user"] for e in mistral if e["user"] in ("alice", "bob", "carol")) == [
        "alice", "bob"]
    by_id = await audit_by_id(usage_proxy, traffic)
    for sent in traffic.sent:
        entry = by_id[sent.request_id]
        assert (entry["user"], short(entry["model"]), entry["endpoint"], entry["status"]) == (
            sent.user, sent.model, sent.endpoint, sent.status)
        if sent.usage is not None:
            assert entry["prompt_tokens"] == sent.usage["prompt_tokens"]
            assert entry["completion_tokens"] == sent.usage["completion_tokens"]
            assert entry["ttft_ms"] > 0 and entry["duration_ms"] >= entry["ttft_ms"]
    assert await audit(usage_proxy, user="alice", model="mistral", status=500) == []


async def test_audit_pages_newest_first(usage_proxy: InProcessProxy, traffic: Traffic) -> None:
    whole = await audit(usage_proxy, user="alice")
    ats = [datetime.fromisoformat(e["at"]) for e in whole]
    assert ats == sorted(ats, reverse=True)
    # The newest row is alice's last request, the oldest her first.
    assert whole[0]["id"] == traffic.of("alice")[-1].request_id
    assert whole[-1]["id"] == traffic.of("alice")[0].request_id

    paged: list[str] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        response = await admin_get(usage_proxy, "/api/admin/audit", user="alice", limit=3,
                             offset=offset)
        assert response.status_code == 200
        page = response.json()
        assert len(page["entries"]) <= 3
        paged += [e["id"] for e in page["entries"]]
        offset = page["next_offset"]
        pages += 1
        assert pages <= 5
    assert paged == [e["id"] for e in whole]
    assert pages == 2
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"status": 99}):
        assert (await admin_get(usage_proxy, "/api/admin/audit", **bad)).status_code == 422, bad


async def test_audit_row_for_a_bad_token_names_the_reason(usage_proxy: InProcessProxy) -> None:
    correlation_id = f"bad-token-{uuid.uuid4().hex[:12]}"
    response, _ = await send(usage_proxy, None, "llama3.2", "who am I",
                       headers={"Authorization": f"Bearer {make_token('mallory', ttl=-300)}",
                                "X-Request-ID": correlation_id})
    assert response.status_code == 401
    request_id = response.headers["x-request-id"]
    assert request_id != correlation_id

    async def row() -> dict[str, Any] | None:
        return next((e for e in await audit(usage_proxy, status=401) if e["id"] == request_id),
                    None)

    entry = await wait_until_async(row)
    assert entry["correlation_id"] == correlation_id
    assert [e["id"] for e in await audit(usage_proxy, correlation_id=correlation_id)] == [
        request_id]
    assert entry["user"] is None
    assert entry["endpoint"] == "/api/llm/generate"
    assert "expired" in entry["error"]
    assert entry["prompt_sha256"] is None and entry["prompt_text"] is None


async def test_audit_keeps_a_prompt_hash_not_the_prompt(usage_proxy: InProcessProxy,
                                                        traffic: Traffic) -> None:
    by_id = await audit_by_id(usage_proxy, traffic)
    for sent in traffic.sent:
        entry = by_id[sent.request_id]
        assert entry["prompt_sha256"] == hashlib.sha256(sent.prompt.encode()).hexdigest()
        assert entry["prompt_chars"] == len(sent.prompt)
        assert entry["prompt_text"] is None


async def test_audit_stores_prompts_when_configured(gpu_cost_proxy: InProcessProxy) -> None:
    prompt = "keep this prompt, ünïcode included"
    await send(gpu_cost_proxy, "storer", "llama3.2", prompt, options={"num_predict": 2})
    await send(gpu_cost_proxy, "storer", "llama3.2", "first line\nsecond line", chat=True,
         options={"num_predict": 2})
    entries = await wait_for_rows(gpu_cost_proxy, "storer", 2)
    by_endpoint = {e["endpoint"]: e for e in entries}
    generated = by_endpoint["/api/llm/generate"]
    assert generated["prompt_text"] == prompt
    assert generated["prompt_sha256"] == hashlib.sha256(prompt.encode()).hexdigest()
    assert by_endpoint["/api/llm/chat"]["prompt_text"] == "first line\nsecond line"


ADMIN_ROUTES = [
    ("GET", "/api/admin/usage", None),
    ("GET", "/api/admin/usage?group_by=model", None),
    ("GET", "/api/admin/costs", None),
    ("GET", "/api/admin/audit", None),
    ("GET", "/api/admin/templates", None),
    ("POST", "/api/admin/templates", {"name": "sneaky", "template": "hi"}),
    ("GET", "/api/admin/templates/sneaky", None),
    ("PUT", "/api/admin/templates/sneaky", {"name": "sneaky", "template": "hi"}),
    ("DELETE", "/api/admin/templates/sneaky", None),
    ("POST", "/api/admin/models/pull", {"model": "llama3.2"}),
    ("GET", "/api/admin/models/llama3.2", None),
    ("DELETE", "/api/admin/models/llama3.2", None),
]


async def test_users_get_403_from_every_admin_route(usage_proxy: InProcessProxy, sim) -> None:
    client = usage_proxy.client
    for method, path, body in ADMIN_ROUTES:
        response = await client.request(method, path, headers=auth("alice"), json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json() == {"error": "this route requires the admin role"}
    # Nothing reached Ollama, and nothing was created.
    assert not {"/api/pull", "/api/delete", "/api/show"} & set(sim_stats(sim)["requests"])
    assert (await client.get("/api/admin/templates/sneaky", headers=admin_auth())
            ).status_code == 404


# -- rows the database refuses must not stop the audit log ---------------------------------------


POISON = [
    # A model name (name:tag) longer than the 200 characters of audit_log.model: refused (422).
    pytest.param({"model": "m" * 150 + ":" + "t" * 60, "status": 422}, id="long-model-name"),
    # A token whose `sub` holds a NUL, not storable in Postgres text: refused (401).
    pytest.param({"sub": "eve\x00", "status": 401}, id="nul-in-sub"),
]


@pytest.mark.parametrize("poison", POISON)
async def test_one_unstorable_row_does_not_stop_the_audit_log(make_proxy: MakeProxy,
                                                              database_url: str,
                                                              poison: dict[str, Any]) -> None:
    proxy = await make_proxy(database_url=database_url)
    sub = poison.get("sub", "poisoner")
    response, _ = await send(proxy, sub, poison.get("model", "llama3.2"), "first",
                       headers=auth(sub))
    assert response.status_code == poison["status"]
    user = f"after-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        assert (await send(proxy, user, "llama3.2", "after the poison"))[0].status_code == 200
    # Every later request is still audited: rows are written every 0.25 s, so 5 s is plenty...
    await wait_for_rows(proxy, user, 2, timeout=5)
    # ...and nothing is left behind in the spool.
    metrics = (await proxy.client.get("/metrics")).text
    assert "llm_proxy_audit_spooled_rows 0.0" in metrics
