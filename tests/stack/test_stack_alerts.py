"""Alerts reach people: Prometheus -> the stack's Alertmanager -> a webhook this test runs.

The stack's Alertmanager is recreated with a routing file derived from the shipped one
(dashboards/alertmanager/alertmanager.yml) the way an operator's copy is (README, "Alert
routing"): its route and inhibit_rules kept exactly, a webhook added to each receiver, set through
ALERTMANAGER_CONFIG. Only the grouping delays are shortened, so that a notification leaves within
a second of its alert rather than after the shipped 30 s. The webhook is an HTTP server in this
process, on the host's address on the `egress` network (its gateway): Alertmanager reaches it the
way it reaches a receiver off the host. At the end the shipped file is put back.

Alerts posted here carry a `run` label of their own, so that what the stack's Prometheus sends
meanwhile (and an earlier run's notification log in the data volume) cannot pass for them.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from dashboards.rules import DEPENDS_ON, PAGE, PROXY, PROXY_DOWN, TICKET, WATCHDOG
from tests.dashboards.paths import ALERTMANAGER_CONFIG
from tests.hosts.target import ALERTMANAGER_PORT
from tests.stack.conftest import LocalStack
from tests.support.timing import scaled, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

ALERTMANAGER_URL = f"http://127.0.0.1:{ALERTMANAGER_PORT}"
# Test routing only: the shipped delays (30 s, 5 min) would make each check wait minutes.
QUICK = {"group_wait": "1s", "group_interval": "1s"}
# Prometheus evaluates every 15 s and sends a firing alert again every minute (its
# --rules.alert.resend-delay): a fresh Alertmanager hears of the Watchdog within 75 s.
WATCHDOG_DEADLINE_S = 150
DELIVERY_DEADLINE_S = 30


class Receiver:
    """The notifications Alertmanager POSTed, in order of arrival (its webhook JSON)."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def record(self, notification: dict[str, Any]) -> None:
        with self.lock:
            self.notifications.append(notification)

    def alerts(self, receiver: str, **labels: str) -> list[dict[str, Any]]:
        """Every alert sent to `receiver` whose labels include `labels`."""
        with self.lock:
            sent = [n for n in self.notifications if n["receiver"] == receiver]
        return [
            alert
            for notification in sent
            for alert in notification["alerts"]
            if labels.items() <= alert["labels"].items()
        ]

    def wait_for(self, receiver: str, **labels: str) -> list[dict[str, Any]]:
        return wait_until(lambda: self.alerts(receiver, **labels), DELIVERY_DEADLINE_S, 0.2)


def webhook_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            receiver.record(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: the notifications themselves are the record."""

    return Handler


def egress_gateway(stack: LocalStack) -> str:
    """The host's address on the stack's `egress` network, as its containers see it."""
    network = f"{stack.project}_egress"
    done = subprocess.run(
        ["docker", "network", "inspect", network, "--format", "{{json .IPAM.Config}}"],
        capture_output=True, text=True, timeout=scaled(30), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    gateway = next((entry["Gateway"] for entry in config if entry.get("Gateway")), "")
    assert gateway, f"{network} has no gateway: {config}"
    return str(gateway)


def quick(route: dict[str, Any], top: bool = True) -> dict[str, Any]:
    """`route` with the test's grouping delays where it sets them (the top route always: the
    others inherit), and so its children; everything else kept."""
    children = [quick(child, top=False) for child in route.get("routes", [])]
    shortened = {key: value for key, value in QUICK.items() if top or key in route}
    return {**route, **shortened, **({"routes": children} if children else {})}


def routing_with_webhooks(url: str) -> dict[str, Any]:
    """The shipped routing file as an operator completes it: each receiver gets a webhook at
    `url`/<receiver>; the route (delays aside) and the inhibit rules are the shipped ones."""
    shipped: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    receivers = [
        {**receiver, "webhook_configs": [{"url": f"{url}/{receiver['name']}"}]}
        for receiver in shipped["receivers"]
    ]
    return {**shipped, "route": quick(shipped["route"]), "receivers": receivers}


@pytest.fixture(scope="module")
def receiver(
    local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Receiver]:
    received = Receiver()
    server = ThreadingHTTPServer((egress_gateway(local_stack), 0), webhook_handler(received))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    routing = tmp_path_factory.mktemp("alertmanager") / "alertmanager.yml"
    routing.write_text(yaml.safe_dump(routing_with_webhooks(f"http://{host}:{port}")))
    # Alertmanager runs as nobody; the bind mount shows the file with its own mode.
    routing.chmod(0o644)
    try:
        recreate_alertmanager(local_stack, routing)
        yield received
    finally:
        try:
            recreate_alertmanager(local_stack, None)
        finally:
            server.shutdown()
            server.server_close()


def recreate_alertmanager(stack: LocalStack, routing: Path | None) -> None:
    """Alertmanager recreated with `routing` as ALERTMANAGER_CONFIG (None: the shipped file),
    healthy before this returns."""
    overrides = {"ALERTMANAGER_CONFIG": str(routing)} if routing else {}
    stack.compose(
        "up", "--detach", "--wait", "--no-deps", "--no-build", "--pull", "never",
        "--force-recreate", "alertmanager",
        log_name="alertmanager-recreate.log", overrides=overrides,
    )  # fmt: skip


def post_alerts(*label_sets: dict[str, str]) -> None:
    """Fire alerts through Alertmanager's API, as Prometheus does (one request, in order)."""
    alerts = [{"labels": labels, "annotations": {"summary": "posted by tests/stack"}}
              for labels in label_sets]
    response = httpx.post(f"{ALERTMANAGER_URL}/api/v2/alerts", json=alerts, timeout=scaled(10))
    assert response.status_code == 200, response.text


def alert_state(**labels: str) -> list[dict[str, Any]]:
    """Alertmanager's own view of the alerts with `labels`: their status (active, suppressed)."""
    matchers = [f'{name}="{value}"' for name, value in labels.items()]
    response = httpx.get(f"{ALERTMANAGER_URL}/api/v2/alerts", params={"filter": matchers},
                         timeout=scaled(10))
    assert response.status_code == 200, response.text
    return [alert["status"] for alert in response.json()]


@pytest.fixture
def run_label() -> dict[str, str]:
    return {"run": secrets.token_hex(6)}


def test_the_watchdog_travels_from_prometheus_through_alertmanager(receiver: Receiver) -> None:
    (first, *_) = wait_until(lambda: receiver.alerts("watchdog", alertname=WATCHDOG),
                             WATCHDOG_DEADLINE_S, 0.5)

    # Evaluated by the stack's Prometheus, not posted by anyone else.
    assert first["status"] == "firing"
    assert parse_qs(urlsplit(first["generatorURL"]).query)["g0.expr"] == ["vector(1)"], first
    assert first["labels"]["severity"] == "none"
    assert not receiver.alerts("on-call", alertname=WATCHDOG)
    assert not receiver.alerts("team", alertname=WATCHDOG)


def test_a_page_reaches_on_call_and_a_ticket_the_team(
    receiver: Receiver, run_label: dict[str, str]
) -> None:
    page = {"alertname": "StackTestPage", "severity": PAGE, **run_label}
    ticket = {"alertname": "StackTestTicket", "severity": TICKET, **run_label}
    post_alerts(page, ticket)

    (paged,) = receiver.wait_for("on-call", **page)
    (ticketed,) = receiver.wait_for("team", **ticket)

    assert paged["status"] == ticketed["status"] == "firing"
    assert not receiver.alerts("team", **page)
    assert not receiver.alerts("on-call", **ticket)


def test_proxy_down_holds_back_the_alerts_that_depend_on_the_proxy(
    receiver: Receiver, run_label: dict[str, str]
) -> None:
    proxy_down = {"alertname": PROXY_DOWN, "severity": PAGE, "job": "proxy", **run_label}
    post_alerts(proxy_down)
    receiver.wait_for("on-call", **proxy_down)
    # A dependant, then an alert that nothing inhibits, on the same route: the dependant's group
    # is older, so had it been let through it would have been sent first.
    dependant = {"alertname": "OllamaDown", "severity": PAGE, DEPENDS_ON: PROXY, **run_label}
    control = {"alertname": "StackTestControl", "severity": PAGE, **run_label}
    post_alerts(dependant, control)

    receiver.wait_for("on-call", **control)

    assert not receiver.alerts("on-call", **dependant)
    (state,) = alert_state(**dependant)
    assert state["state"] == "suppressed" and state["inhibitedBy"], state
    # The same alert without the label (nothing says it depends on the proxy) goes out.
    independent = {"alertname": "OllamaDown", "severity": PAGE, **run_label}
    post_alerts(independent)
    receiver.wait_for("on-call", **independent)


def test_a_page_holds_back_the_ticket_of_the_same_alert(
    receiver: Receiver, run_label: dict[str, str]
) -> None:
    page = {"alertname": "StackTestBoth", "severity": PAGE, **run_label}
    ticket = {"alertname": "StackTestBoth", "severity": TICKET, **run_label}
    other_ticket = {"alertname": "StackTestOther", "severity": TICKET, **run_label}
    post_alerts(page)
    receiver.wait_for("on-call", **page)
    post_alerts(ticket, other_ticket)

    receiver.wait_for("team", **other_ticket)

    assert not receiver.alerts("team", **ticket)
    (state,) = alert_state(**ticket)
    assert state["state"] == "suppressed" and state["inhibitedBy"], state
