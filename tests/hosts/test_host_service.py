"""The service as users and operators meet it: authenticated streams, metrics, loopback UIs."""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import quote

import pytest

from tests.hosts import probes
from tests.hosts.target import MONITORING_PORTS, PROMETHEUS_PORT, StackHost, poll
from tests.support.timing import scaled

# Prometheus scrapes every 15 s (dashboards/prometheus/prometheus.yml); a fresh stack needs one
# successful scrape after the proxy became healthy. `poll` stretches it by the scale factor.
SCRAPE_DEADLINE_S = 90
# A buffered reply reaches the client within milliseconds; 32 streamed tokens take at least
# this long even at a few hundred tokens per second.
MIN_STREAM_SPREAD_S = 0.05


def generate(stack: StackHost, token: str | None, model: str = "llama3.2") -> dict[str, Any]:
    body = json.dumps(
        {"model": model, "prompt": "Why is the sky blue?", "options": {"num_predict": 32}}
    )
    args = [f"{stack.proxy_url}/api/llm/generate", body] + ([token] if token else [])
    return stack.python(probes.POST_STREAM, *args)


def test_generate_streams_tokens_end_to_end_with_a_token(stack: StackHost) -> None:
    token = stack.mint_token()
    answer = generate(stack, token, stack.model(token))

    assert answer["status"] == 200, answer
    lines = answer["lines"]
    tokens = [obj for _, obj in lines if not obj.get("done") and obj.get("response")]
    final = lines[-1][1]
    assert len(tokens) >= 2, f"expected a stream of tokens, got {lines}"
    assert final["done"] is True and "error" not in final, final
    assert final["usage"]["completion_tokens"] >= len(tokens)
    # Streamed, not buffered: the first token arrived well before the end of the generation.
    spread = lines[-1][0] - lines[0][0]
    assert spread >= MIN_STREAM_SPREAD_S, f"all lines arrived within {spread:.3f} s: buffered"


def test_generate_without_a_token_is_401(stack: StackHost) -> None:
    answer = generate(stack, None)

    assert answer["status"] == 401, answer
    assert "error" in json.loads(answer["body"])


def test_generate_with_a_token_signed_by_another_key_is_401(stack: StackHost) -> None:
    answer = generate(stack, stack.mint_token(secret=secrets.token_hex(32)))

    assert answer["status"] == 401, answer


def test_prometheus_scrapes_the_proxy(stack: StackHost) -> None:
    query = quote('up{job="proxy"}')
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?query={query}"

    def proxy_up() -> list[Any]:
        answer = stack.python(probes.HTTP_GET, url)
        if answer["status"] != 200:
            return []
        results = json.loads(answer["body"])["data"]["result"]
        return [r for r in results if r["value"][1] == "1"] or []

    up = poll(proxy_up, SCRAPE_DEADLINE_S)
    assert up, (
        f"Prometheus has no up == 1 for job proxy after {scaled(SCRAPE_DEADLINE_S):g} s; "
        "its targets: "
        + stack.python(probes.HTTP_GET, f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/targets")[
            "body"
        ]
    )


def prometheus_value(stack: StackHost, query: str) -> float:
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?query={quote(query)}"
    answer = stack.python(probes.HTTP_GET, url)
    if answer["status"] != 200:
        return 0.0
    results = json.loads(answer["body"])["data"]["result"]
    return sum(float(r["value"][1]) for r in results)


def test_prometheus_has_the_proxys_request_and_ttft_data_after_traffic(stack: StackHost) -> None:
    token = stack.mint_token()
    assert generate(stack, token, stack.model(token))["status"] == 200
    queries = {
        "requests": 'sum(llm_proxy_requests_total{endpoint="/api/llm/generate",status="200"})',
        "ttft": "sum(llm_proxy_time_to_first_token_seconds_count)",
        "ttft buckets": 'sum(llm_proxy_time_to_first_token_seconds_bucket{le="+Inf"})',
    }

    def all_present() -> dict[str, float] | None:
        values = {name: prometheus_value(stack, q) for name, q in queries.items()}
        return values if all(v > 0 for v in values.values()) else None

    values = poll(all_present, SCRAPE_DEADLINE_S)
    assert values, (
        f"after {scaled(SCRAPE_DEADLINE_S):g} s Prometheus still lacks the proxy's data: "
        + str({name: prometheus_value(stack, q) for name, q in queries.items()})
    )


@pytest.mark.parametrize(("service", "port"), sorted(MONITORING_PORTS.items()))
def test_monitoring_listens_on_loopback_only(
    host: Any, stack: StackHost, service: str, port: int
) -> None:
    # testinfra's spec for 127.0.0.1 alone also matches a socket bound to 0.0.0.0 or to a
    # dual-stack `::`, so both are ruled out explicitly.
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert not host.socket(f"tcp://:::{port}").is_listening
    assert stack.published(service, port) == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    assert stack.tcp_connect("127.0.0.1", port) == "open"
