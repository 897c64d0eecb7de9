"""GET /metrics, in process: who may scrape it, and what the proxy's metrics say. (The in-flight
gauge during a running stream needs a real server: tests/proxy/test_metrics.py.)

Every number is checked against a delta between two scrapes, so the tests do not depend on
what ran before them in the module.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.proxy_app import InProcessProxy, MakeProxy
from tests.support.proxy_process import Samples, free_port, metric_samples
from tests.support.proxy_process import samples_sum as value
from tests.support.timing import wait_until_async
from tests.support.tokens import auth, make_token

pytestmark = pytest.mark.usefixtures("sim")

SCRAPE_TOKEN = "scrape-" + uuid.uuid4().hex
GENERATE = "/api/llm/generate"
# The label a request for "llama3.2:latest" gets: the name upstream lists it under.
LLAMA = "llama3.2:latest"


@pytest.fixture(scope="module")
async def metrics_proxy(make_proxy: MakeProxy) -> InProcessProxy:
    return await make_proxy(proxy_metrics_token=SCRAPE_TOKEN)


async def scrape(proxy: InProcessProxy, token: str | None = SCRAPE_TOKEN) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response = await proxy.client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return metric_samples(response.text)




async def scrape_until(proxy: InProcessProxy, predicate: Callable[[Samples], bool],
                       token: str | None = SCRAPE_TOKEN) -> Samples:
    """Scrape until `predicate` holds for the samples (deadline 10 s); return those samples."""
    found: list[Samples] = []

    async def check() -> bool:
        samples = await scrape(proxy, token)
        found[:] = [samples]
        return predicate(samples)

    await wait_until_async(check)
    return found[0]


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


async def generate(proxy: InProcessProxy, headers: dict[str, str] | None = None, **body: Any
                   ) -> httpx.Response:
    payload = {"model": "llama3.2:latest", "prompt": "Why is the sky blue?", **body}
    return await proxy.client.post(GENERATE, headers=headers if headers is not None else auth(),
                                   json=payload)


# -- who may scrape -----------------------------------------------------------------------------


async def test_scrape_needs_the_token_when_one_is_set(metrics_proxy: InProcessProxy) -> None:
    client = metrics_proxy.client
    missing = await client.get("/metrics")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    for wrong in (f"Bearer {SCRAPE_TOKEN}x", f"Bearer {SCRAPE_TOKEN[:-1]}", SCRAPE_TOKEN,
                  f"Basic {SCRAPE_TOKEN}", f"Bearer {make_token(role='admin')}"):
        response = await client.get("/metrics", headers={"Authorization": wrong})
        assert response.status_code == 401, wrong
        assert "llm_proxy" not in response.text

    good = await client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert good.status_code == 200
    assert good.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f.type for f in text_string_to_metric_families(good.text)}
    assert families["llm_proxy_requests"] == "counter"
    assert families["llm_proxy_request_duration_seconds"] == "histogram"
    assert families["llm_proxy_time_to_first_token_seconds"] == "histogram"
    assert families["llm_proxy_generation_tokens_per_second"] == "histogram"
    assert families["llm_proxy_requests_in_flight"] == "gauge"
    assert families["llm_proxy_upstream_up"] == "gauge"
    assert families["llm_proxy_audit_queue_depth"] == "gauge"
    assert families["llm_proxy_audit_spooled_rows"] == "gauge"


async def test_production_without_a_token_refuses_to_serve_metrics(make_proxy: MakeProxy,
                                                                    postgres_url: str) -> None:
    import secrets

    # Production refuses weak secrets, SQLite and in-process limits (test_production_settings).
    secret = secrets.token_hex(32)
    proxy = await make_proxy(proxy_env="production", jwt_secret=secret,
                             database_url=postgres_url, redis_url="redis://127.0.0.1:6379/0")
    response = await proxy.client.get("/metrics")
    assert response.status_code == 403
    assert "PROXY_METRICS_TOKEN" in response.text
    # Not even a valid admin JWT opens it: the scrape token is the only key.
    admin_token = make_token("root", "admin", secret=secret)
    admin = await proxy.client.get("/metrics",
                                   headers={"Authorization": f"Bearer {admin_token}"})
    assert admin.status_code == 403


async def test_dev_without_a_token_serves_metrics_openly(proxy: InProcessProxy) -> None:
    samples = await scrape(proxy, token=None)
    assert any(name == "llm_proxy_upstream_up" for name, _, _ in samples)


# -- what the metrics say ----------------------------------------------------------------------


async def test_a_streamed_and_a_plain_generation_are_counted(
        metrics_proxy: InProcessProxy) -> None:
    before = await scrape(metrics_proxy)

    streamed = await generate(metrics_proxy, options={"num_predict": 9})
    assert streamed.status_code == 200
    plain = await generate(metrics_proxy, stream=False, options={"num_predict": 5})
    assert plain.status_code == 200
    usages = [ndjson(streamed)[-1]["usage"], plain.json()["usage"]]
    prompt_tokens = sum(u["prompt_tokens"] for u in usages)
    completion_tokens = sum(u["completion_tokens"] for u in usages)
    assert completion_tokens == 14

    async def both_counted() -> bool:
        labels = {"endpoint": GENERATE, "model": LLAMA, "status": "200"}
        return (value(await scrape(metrics_proxy), "llm_proxy_requests_total", **labels)
                - value(before, "llm_proxy_requests_total", **labels)) == 2

    # A stream's books are closed after its last byte has gone out: poll for it.
    await wait_until_async(both_counted)
    after = await scrape(metrics_proxy)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("llm_proxy_request_duration_seconds_count", endpoint=GENERATE, model=LLAMA) == 2
    assert grew("llm_proxy_request_duration_seconds_sum", endpoint=GENERATE, model=LLAMA) > 0
    assert grew("llm_proxy_time_to_first_token_seconds_count", model=LLAMA) == 2
    assert grew("llm_proxy_time_to_first_token_seconds_sum", model=LLAMA) > 0
    assert grew("llm_proxy_prompt_tokens_total", model=LLAMA) == prompt_tokens
    assert grew("llm_proxy_generation_tokens_total", model=LLAMA) == completion_tokens
    assert grew("llm_proxy_generation_tokens_per_second_count", model=LLAMA) == 2
    assert grew("llm_proxy_generation_tokens_per_second_sum", model=LLAMA) > 0
    assert value(after, "llm_proxy_requests_in_flight", endpoint=GENERATE) == 0


async def test_model_label_is_bounded_to_models_upstream_has(
        metrics_proxy: InProcessProxy) -> None:
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    before = await scrape(metrics_proxy)
    for stream in (True, False):
        response = await generate(metrics_proxy, model=ghost, stream=stream)
        assert response.status_code == 404
    await scrape_until(metrics_proxy, lambda s: value(
        s, "llm_proxy_requests_total", endpoint=GENERATE, model="unknown", status="404")
        - value(before, "llm_proxy_requests_total", endpoint=GENERATE,
                model="unknown", status="404") == 2)
    after = await scrape(metrics_proxy)
    assert all(ghost not in v for _, labels, _ in after for v in labels.values())
    # A failed request evaluated nothing: no tokens or first-token time for "unknown".
    assert value(after, "llm_proxy_time_to_first_token_seconds_count", model="unknown") == 0
    assert value(after, "llm_proxy_generation_tokens_total", model="unknown") == 0


async def test_model_label_is_one_series_per_model_whatever_the_spelling(
        metrics_proxy: InProcessProxy) -> None:
    """"llama3.2" and "llama3.2:latest" are one model upstream, so one `model` label value."""
    before = await scrape(metrics_proxy)
    for model in ("llama3.2", "llama3.2:latest"):
        assert (await generate(metrics_proxy, model=model, stream=False,
                               options={"num_predict": 2})).status_code == 200

    def counted(samples: Samples) -> float:
        return (value(samples, "llm_proxy_requests_total", endpoint=GENERATE, status="200")
                - value(before, "llm_proxy_requests_total", endpoint=GENERATE, status="200"))

    await scrape_until(metrics_proxy, lambda s: counted(s) == 2)
    after = await scrape(metrics_proxy)
    labels = {lbls["model"] for n, lbls, _ in after
              if n == "llm_proxy_requests_total" and lbls["endpoint"] == GENERATE
              and lbls["status"] == "200"}
    assert labels == {LLAMA}, f"one model, several label values: {sorted(labels)}"


async def test_unrouted_paths_do_not_become_endpoint_labels(
        metrics_proxy: InProcessProxy) -> None:
    canary = f"/api/scan-{uuid.uuid4().hex[:8]}"
    before = value(await scrape(metrics_proxy), "llm_proxy_requests_total", endpoint="unmatched")
    client = metrics_proxy.client
    assert (await client.get(canary, headers=auth())).status_code == 404
    assert (await client.post(f"/api/llm/generate/{canary}", headers=auth(),
                              json={})).status_code == 404
    samples = await scrape_until(metrics_proxy, lambda s: value(
        s, "llm_proxy_requests_total", endpoint="unmatched") - before == 2)
    assert all(canary not in v for _, labels, _ in samples for v in labels.values())


async def test_auth_failures_are_counted_by_reason(metrics_proxy: InProcessProxy) -> None:
    before = await scrape(metrics_proxy)
    bad = {
        "expired": make_token(ttl=-120),
        "malformed": "not.a.jwt",
        "signature": make_token(secret="another-secret-" + "y" * 40),
    }
    for token in bad.values():
        response = await generate(metrics_proxy, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
    assert (await generate(metrics_proxy, headers={})).status_code == 401
    after = await scrape(metrics_proxy)
    for reason in (*bad, "missing_token"):
        grew = (value(after, "llm_proxy_auth_failures_total", reason=reason)
                - value(before, "llm_proxy_auth_failures_total", reason=reason))
        assert grew == 1, reason
    assert all(t not in v for t in bad.values() for _, labels, _ in after for v in labels.values())


async def test_rate_limited_requests_are_counted(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(proxy_rate_limit="1/minute")
    headers = auth(f"limited-{uuid.uuid4().hex[:6]}")
    first = await generate(proxy, headers=headers, stream=False, options={"num_predict": 2})
    assert first.status_code == 200
    second = await generate(proxy, headers=headers, stream=False, options={"num_predict": 2})
    assert second.status_code == 429
    samples = await scrape_until(proxy, lambda s: value(
        s, "llm_proxy_requests_total", endpoint=GENERATE, status="429") == 1, token=None)
    assert value(samples, "llm_proxy_rate_limited_total", limit="rate") == 1
    assert value(samples, "llm_proxy_requests_total", endpoint=GENERATE, status="200") == 1


async def test_upstream_up_follows_the_probe(metrics_proxy: InProcessProxy,
                                             make_proxy: MakeProxy) -> None:
    await scrape_until(metrics_proxy, lambda s: value(s, "llm_proxy_upstream_up") == 1)

    closed = await make_proxy(ollama_url=f"http://127.0.0.1:{free_port()}",
                              ollama_connect_timeout=0.5)
    status = await closed.client.get("/api/llm/status")
    assert status.status_code == 503
    samples = await scrape(closed, None)
    assert [v for n, _, v in samples if n == "llm_proxy_upstream_up"] == [0]


async def test_audit_gauges_are_exported_and_settle(metrics_proxy: InProcessProxy) -> None:
    before = await scrape(metrics_proxy)
    assert (await generate(metrics_proxy, stream=False, options={"num_predict": 2})
            ).status_code == 200
    # The row is written within a flush interval: rows_written grows, the queue empties.
    after = await scrape_until(metrics_proxy, lambda s: (
        value(s, "llm_proxy_audit_rows_written_total")
        > value(before, "llm_proxy_audit_rows_written_total")
        and value(s, "llm_proxy_audit_queue_depth") == 0))
    assert [v for n, _, v in after if n == "llm_proxy_audit_spooled_rows"] == [0]
    assert [v for n, _, v in after if n == "llm_proxy_audit_queue_depth"] == [0]


async def test_no_label_carries_a_user_id_or_a_prompt(metrics_proxy: InProcessProxy) -> None:
    sub = f"user-canary-{uuid.uuid4().hex[:8]}"
    prompt = f"prompt-canary-{uuid.uuid4().hex[:8]}"
    headers = auth(sub)
    assert (await generate(metrics_proxy, headers=headers, prompt=prompt, stream=False,
                           options={"num_predict": 2})).status_code == 200
    assert (await generate(metrics_proxy, headers=headers, prompt=prompt,
                           options={"num_predict": 2})).status_code == 200
    assert (await generate(metrics_proxy, headers=headers, prompt=prompt, model="ghost-model",
                           stream=False)).status_code == 404
    client = metrics_proxy.client
    chat = await client.post("/api/llm/chat", headers=headers, json={
        "model": "llama3.2", "stream": False, "context_id": sub,
        "messages": [{"role": "user", "content": prompt}], "options": {"num_predict": 2}})
    assert chat.status_code == 200
    assert (await client.get(f"/api/llm/conversations/{sub}", headers=headers)
            ).status_code == 200

    await scrape_until(metrics_proxy, lambda s: value(
        s, "llm_proxy_requests_total", endpoint="/api/llm/conversations/{conversation_id}") >= 1)
    text = (await client.get("/metrics",
                             headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})).text
    assert 'endpoint="/api/llm/chat"' in text
    assert sub not in text
    assert prompt not in text
