"""GET /metrics over real HTTP: who may scrape it, and what the proxy's metrics say.

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

from tests.support.proxy_process import ProxyProcess, free_port
from tests.support.timing import scaled, wait_until
from tests.support.tokens import auth, make_token

pytestmark = pytest.mark.usefixtures("sim")

SCRAPE_TOKEN = "scrape-" + uuid.uuid4().hex
GENERATE = "/api/llm/generate"
# The label a request for "llama3.2:latest" gets: the name upstream lists it under.
LLAMA = "llama3.2:latest"

Labels = dict[str, str]
Samples = list[tuple[str, Labels, float]]


@pytest.fixture(scope="module")
def metrics_proxy(proxy_factory, simulator) -> ProxyProcess:
    return proxy_factory(OLLAMA_URL=simulator.url, PROXY_METRICS_TOKEN=SCRAPE_TOKEN)


def scrape(proxy: ProxyProcess, token: str | None = SCRAPE_TOKEN) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response = httpx.get(f"{proxy.url}/metrics", headers=headers, timeout=scaled(10))
    assert response.status_code == 200, response.text
    return [(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(response.text)
            for s in family.samples]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
    return sum(v for n, lbls, v in samples
               if n == name and all(lbls.get(k) == want for k, want in labels.items()))




def scrape_until(proxy: ProxyProcess, predicate: Callable[[Samples], bool],
                 token: str | None = SCRAPE_TOKEN) -> Samples:
    """Scrape until `predicate` holds for the samples (deadline 10 s); return those samples."""
    found: list[Samples] = []

    def check() -> bool:
        samples = scrape(proxy, token)
        found[:] = [samples]
        return predicate(samples)

    wait_until(check)
    return found[0]


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def generate(proxy: ProxyProcess, headers: dict[str, str] | None = None, **body: Any
             ) -> httpx.Response:
    payload = {"model": "llama3.2:latest", "prompt": "Why is the sky blue?", **body}
    with proxy.client() as client:
        return client.post(GENERATE, headers=headers if headers is not None else auth(),
                           json=payload)


# -- who may scrape -----------------------------------------------------------------------------


def test_scrape_needs_the_token_when_one_is_set(metrics_proxy: ProxyProcess) -> None:
    url = f"{metrics_proxy.url}/metrics"
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    for wrong in (f"Bearer {SCRAPE_TOKEN}x", f"Bearer {SCRAPE_TOKEN[:-1]}", SCRAPE_TOKEN,
                  f"Basic {SCRAPE_TOKEN}", f"Bearer {make_token(role='admin')}"):
        response = httpx.get(url, headers={"Authorization": wrong})
        assert response.status_code == 401, wrong
        assert "llm_proxy" not in response.text

    good = httpx.get(url, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
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


def test_production_without_a_token_refuses_to_serve_metrics(proxy_factory, simulator,
                                                              postgres_url: str) -> None:
    import secrets

    # Production refuses weak secrets, SQLite and in-process limits (test_production_settings).
    secret = secrets.token_hex(32)
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_ENV="production", JWT_SECRET=secret,
                          DATABASE_URL=postgres_url, REDIS_URL="redis://127.0.0.1:6379/0")
    response = httpx.get(f"{proxy.url}/metrics")
    assert response.status_code == 403
    assert "PROXY_METRICS_TOKEN" in response.text
    # Not even a valid admin JWT opens it: the scrape token is the only key.
    admin_token = make_token("root", "admin", secret=secret)
    admin = httpx.get(f"{proxy.url}/metrics", headers={"Authorization": f"Bearer {admin_token}"})
    assert admin.status_code == 403


def test_dev_without_a_token_serves_metrics_openly(proxy_server: ProxyProcess) -> None:
    samples = scrape(proxy_server, token=None)
    assert any(name == "llm_proxy_upstream_up" for name, _, _ in samples)


# -- what the metrics say ----------------------------------------------------------------------


def test_a_streamed_and_a_plain_generation_are_counted(metrics_proxy: ProxyProcess) -> None:
    before = scrape(metrics_proxy)

    streamed = generate(metrics_proxy, options={"num_predict": 9})
    assert streamed.status_code == 200
    plain = generate(metrics_proxy, stream=False, options={"num_predict": 5})
    assert plain.status_code == 200
    usages = [ndjson(streamed)[-1]["usage"], plain.json()["usage"]]
    prompt_tokens = sum(u["prompt_tokens"] for u in usages)
    completion_tokens = sum(u["completion_tokens"] for u in usages)
    assert completion_tokens == 14

    def delta(name: str, **labels: str) -> float:
        return value(scrape(metrics_proxy), name, **labels) - value(before, name, **labels)

    # A stream's books are closed after its last byte has gone out: poll for it.
    wait_until(lambda: delta("llm_proxy_requests_total", endpoint=GENERATE, model=LLAMA,
                             status="200") == 2)
    after = scrape(metrics_proxy)

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


def test_in_flight_gauge_counts_a_running_stream(metrics_proxy: ProxyProcess, sim) -> None:
    sim.configure(tokens_per_second=20)
    with metrics_proxy.client() as client, client.stream(
        "POST", GENERATE, headers=auth(),
        json={"model": "llama3.2", "prompt": "slowly", "options": {"num_predict": 20}},
    ) as response:
        lines = response.iter_lines()
        next(lines)  # the stream has started
        assert value(scrape(metrics_proxy), "llm_proxy_requests_in_flight",
                     endpoint=GENERATE) == 1
        for _ in lines:
            pass
    wait_until(lambda: value(scrape(metrics_proxy), "llm_proxy_requests_in_flight",
                             endpoint=GENERATE) == 0)


def test_model_label_is_bounded_to_models_upstream_has(metrics_proxy: ProxyProcess) -> None:
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    before = scrape(metrics_proxy)
    for stream in (True, False):
        response = generate(metrics_proxy, model=ghost, stream=stream)
        assert response.status_code == 404
    wait_until(lambda: value(scrape(metrics_proxy), "llm_proxy_requests_total",
                             endpoint=GENERATE, model="unknown", status="404")
               - value(before, "llm_proxy_requests_total", endpoint=GENERATE,
                       model="unknown", status="404") == 2)
    after = scrape(metrics_proxy)
    assert all(ghost not in v for _, labels, _ in after for v in labels.values())
    # A failed request evaluated nothing: no tokens or first-token time for "unknown".
    assert value(after, "llm_proxy_time_to_first_token_seconds_count", model="unknown") == 0
    assert value(after, "llm_proxy_generation_tokens_total", model="unknown") == 0


def test_model_label_is_one_series_per_model_whatever_the_spelling(
        metrics_proxy: ProxyProcess) -> None:
    """"llama3.2" and "llama3.2:latest" are one model upstream, so one `model` label value."""
    before = scrape(metrics_proxy)
    for model in ("llama3.2", "llama3.2:latest"):
        assert generate(metrics_proxy, model=model, stream=False,
                        options={"num_predict": 2}).status_code == 200

    def counted() -> float:
        return (value(scrape(metrics_proxy), "llm_proxy_requests_total", endpoint=GENERATE,
                      status="200")
                - value(before, "llm_proxy_requests_total", endpoint=GENERATE, status="200"))

    wait_until(lambda: counted() == 2)
    after = scrape(metrics_proxy)
    labels = {lbls["model"] for n, lbls, _ in after
              if n == "llm_proxy_requests_total" and lbls["endpoint"] == GENERATE
              and lbls["status"] == "200"}
    assert labels == {LLAMA}, f"one model, several label values: {sorted(labels)}"


def test_unrouted_paths_do_not_become_endpoint_labels(metrics_proxy: ProxyProcess) -> None:
    canary = f"/api/scan-{uuid.uuid4().hex[:8]}"
    before = value(scrape(metrics_proxy), "llm_proxy_requests_total", endpoint="unmatched")
    with metrics_proxy.client() as client:
        assert client.get(canary, headers=auth()).status_code == 404
        assert client.post(f"/api/llm/generate/{canary}", headers=auth(),
                           json={}).status_code == 404
    samples = scrape_until(metrics_proxy, lambda s: value(
        s, "llm_proxy_requests_total", endpoint="unmatched") - before == 2)
    assert all(canary not in v for _, labels, _ in samples for v in labels.values())


def test_auth_failures_are_counted_by_reason(metrics_proxy: ProxyProcess) -> None:
    before = scrape(metrics_proxy)
    bad = {
        "expired": make_token(ttl=-120),
        "malformed": "not.a.jwt",
        "signature": make_token(secret="another-secret-" + "y" * 40),
    }
    for token in bad.values():
        response = generate(metrics_proxy, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
    assert generate(metrics_proxy, headers={}).status_code == 401
    after = scrape(metrics_proxy)
    for reason in (*bad, "missing_token"):
        grew = (value(after, "llm_proxy_auth_failures_total", reason=reason)
                - value(before, "llm_proxy_auth_failures_total", reason=reason))
        assert grew == 1, reason
    assert all(t not in v for t in bad.values() for _, labels, _ in after for v in labels.values())


def test_rate_limited_requests_are_counted(proxy_factory, simulator) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_RATE_LIMIT="1/minute")
    headers = auth(f"limited-{uuid.uuid4().hex[:6]}")
    first = generate(proxy, headers=headers, stream=False, options={"num_predict": 2})
    assert first.status_code == 200
    second = generate(proxy, headers=headers, stream=False, options={"num_predict": 2})
    assert second.status_code == 429
    samples = scrape_until(proxy, lambda s: value(
        s, "llm_proxy_requests_total", endpoint=GENERATE, status="429") == 1, token=None)
    assert value(samples, "llm_proxy_rate_limited_total", limit="rate") == 1
    assert value(samples, "llm_proxy_requests_total", endpoint=GENERATE, status="200") == 1


def test_upstream_up_follows_the_probe(metrics_proxy: ProxyProcess, proxy_factory) -> None:
    wait_until(lambda: value(scrape(metrics_proxy), "llm_proxy_upstream_up") == 1)

    closed = proxy_factory(OLLAMA_URL=f"http://127.0.0.1:{free_port()}",
                           OLLAMA_CONNECT_TIMEOUT="0.5")
    status = httpx.get(f"{closed.url}/api/llm/status", timeout=scaled(10))
    assert status.status_code == 503
    samples = scrape(closed, None)
    assert [v for n, _, v in samples if n == "llm_proxy_upstream_up"] == [0]


def test_audit_gauges_are_exported_and_settle(metrics_proxy: ProxyProcess) -> None:
    before = scrape(metrics_proxy)
    assert generate(metrics_proxy, stream=False, options={"num_predict": 2}).status_code == 200
    # The row is written within a flush interval: rows_written grows, the queue empties.
    after = scrape_until(metrics_proxy, lambda s: (
        value(s, "llm_proxy_audit_rows_written_total")
        > value(before, "llm_proxy_audit_rows_written_total")
        and value(s, "llm_proxy_audit_queue_depth") == 0))
    assert [v for n, _, v in after if n == "llm_proxy_audit_spooled_rows"] == [0]
    assert [v for n, _, v in after if n == "llm_proxy_audit_queue_depth"] == [0]


def test_no_label_carries_a_user_id_or_a_prompt(metrics_proxy: ProxyProcess) -> None:
    sub = f"user-canary-{uuid.uuid4().hex[:8]}"
    prompt = f"prompt-canary-{uuid.uuid4().hex[:8]}"
    headers = auth(sub)
    assert generate(metrics_proxy, headers=headers, prompt=prompt, stream=False,
                    options={"num_predict": 2}).status_code == 200
    assert generate(metrics_proxy, headers=headers, prompt=prompt,
                    options={"num_predict": 2}).status_code == 200
    assert generate(metrics_proxy, headers=headers, prompt=prompt, model="ghost-model",
                    stream=False).status_code == 404
    with metrics_proxy.client() as client:
        chat = client.post("/api/llm/chat", headers=headers, json={
            "model": "llama3.2", "stream": False, "context_id": sub,
            "messages": [{"role": "user", "content": prompt}], "options": {"num_predict": 2}})
        assert chat.status_code == 200
        assert client.get(f"/api/llm/conversations/{sub}", headers=headers).status_code == 200

    scrape_until(metrics_proxy, lambda s: value(
        s, "llm_proxy_requests_total", endpoint="/api/llm/conversations/{conversation_id}") >= 1)
    text = httpx.get(f"{metrics_proxy.url}/metrics",
                     headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}).text
    assert 'endpoint="/api/llm/chat"' in text
    assert sub not in text
    assert prompt not in text
