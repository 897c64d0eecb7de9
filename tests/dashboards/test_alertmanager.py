"""Alertmanager: the shipped routing file loads in amtool, routes each alert of the rules to the
receiver its severity names, and inhibits what the rules label as depending on the proxy.

Delivery itself (Prometheus -> Alertmanager -> a webhook, inhibition seen from a receiver) is
proved against the running stack in tests/stack/test_stack_alerts.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.rules import (
    ALERTS,
    DEPENDS_ON,
    PAGE,
    PROXY,
    PROXY_DOWN,
    TICKET,
    WATCHDOG,
    reads_proxy_metrics,
)
from tests.dashboards.paths import ALERTMANAGER_CONFIG, PROMETHEUS_DIR, REPO_ROOT
from tests.support.timing import scaled

# Each severity's receiver; the Watchdog's goes by its name.
RECEIVERS = {PAGE: "on-call", TICKET: "team"}
WATCHDOG_RECEIVER = "watchdog"
# Written out, not derived: the alerts whose expressions read the proxy's metrics.
PROXY_DEPENDANTS = {
    "OllamaDown",
    "LlmProxyHighErrorRatio",
    "LlmProxyHighLatency",
    "LlmProxySlowFirstToken",
    "LlmSlowGeneration",
    "LlmProxyAuthFailureSpike",
    "LlmProxyRateLimitSpike",
    "AuditSpoolNotDraining",
    "LlmProxyLimiterBackendErrors",
    "TeamBudgetNearlySpent",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=scaled(60), check=False)


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    return loaded


def routed_to(amtool: str, path: Path, labels: dict[str, str]) -> str:
    """The receiver `amtool config routes test` picks for an alert with `labels`."""
    pairs = [f"{name}={value}" for name, value in labels.items()]
    done = run(amtool, "config", "routes", "test", f"--config.file={path}", *pairs)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def test_the_shipped_config_passes_amtool_check_config(amtool: str) -> None:
    done = run(amtool, "check-config", str(ALERTMANAGER_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert " - 2 inhibit rules\n - 3 receivers\n" in done.stdout, done.stdout


def test_amtool_check_config_catches_a_route_to_a_missing_receiver(
    amtool: str, tmp_path: Path
) -> None:
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(ALERTMANAGER_CONFIG.read_text().replace("receiver: on-call",
                                                              "receiver: on-cal"))
    done = run(amtool, "check-config", str(broken))
    assert done.returncode != 0, "a route to an undefined receiver passed amtool check-config"


def test_the_shipped_receivers_send_nowhere() -> None:
    # Delivery is the operator's to configure (ALERTMANAGER_CONFIG): no URL or address here.
    receivers = config()["receivers"]
    assert receivers == [{"name": name} for name in (*RECEIVERS.values(), WATCHDOG_RECEIVER)]


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a.name)
def test_every_alert_reaches_the_receiver_of_its_severity(amtool: str, alert: Any) -> None:
    expected = WATCHDOG_RECEIVER if alert.name == WATCHDOG else RECEIVERS[alert.severity]
    labels = {"alertname": alert.name, **alert.labels()}
    assert routed_to(amtool, ALERTMANAGER_CONFIG, labels) == expected


def test_an_alert_of_no_known_severity_still_reaches_the_team(amtool: str) -> None:
    assert routed_to(amtool, ALERTMANAGER_CONFIG, {"alertname": "New", "severity": "info"}) == (
        RECEIVERS[TICKET]
    )


def test_the_rules_label_exactly_the_alerts_that_read_the_proxys_metrics() -> None:
    labelled = {a.name for a in ALERTS if a.labels().get(DEPENDS_ON) == PROXY}
    assert labelled == PROXY_DEPENDANTS
    # LlmProxyDown reads Prometheus's `up` for the proxy's job, not the proxy's own metrics.
    assert reads_proxy_metrics(next(a.expr for a in ALERTS if a.name == PROXY_DOWN))
    assert PROXY_DOWN not in labelled


def test_proxy_down_inhibits_the_alerts_that_depend_on_the_proxy() -> None:
    rules = config()["inhibit_rules"]
    assert {
        "source_matchers": [f'alertname="{PROXY_DOWN}"'],
        "target_matchers": [f'{DEPENDS_ON}="{PROXY}"'],
    } in rules
    # A page silences the ticket of the same alert, never another alert's.
    assert {
        "source_matchers": [f'severity="{PAGE}"'],
        "target_matchers": [f'severity="{TICKET}"'],
        "equal": ["alertname"],
    } in rules
    assert len(rules) == 2, rules


def test_the_config_and_the_readme_name_the_proxys_dependants() -> None:
    for path in (ALERTMANAGER_CONFIG, REPO_ROOT / "README.md"):
        text = path.read_text()
        start = text.index("depends_on")
        named = set(re.findall(r"`?(\b[A-Z][A-Za-z]+)`?", text[start:start + 700]))
        assert PROXY_DEPENDANTS <= named, (path, PROXY_DEPENDANTS - named)


def test_prometheus_sends_its_alerts_to_the_stacks_alertmanager() -> None:
    prometheus = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (alertmanager,) = prometheus["alerting"]["alertmanagers"]
    assert alertmanager["static_configs"] == [{"targets": ["alertmanager:9093"]}]


def readme_receivers() -> list[dict[str, Any]]:
    """The receivers of the README's "Alert routing" example."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("### Alert routing"):]
    block = re.search(r"```yaml\n(receivers:\n.*?)```", section, flags=re.DOTALL)
    assert block, "README's Alert routing section has no receivers example"
    receivers: list[dict[str, Any]] = yaml.safe_load(block.group(1))["receivers"]
    return receivers


def test_the_readmes_receivers_complete_the_shipped_config(amtool: str, tmp_path: Path) -> None:
    receivers = readme_receivers()
    assert [r["name"] for r in receivers] == [r["name"] for r in config()["receivers"]]
    kinds = {key for receiver in receivers for key in receiver if key != "name"}
    assert kinds == {"webhook_configs", "email_configs", "slack_configs"}
    operators = tmp_path / "alertmanager.yml"
    operators.write_text(yaml.safe_dump({**config(), "receivers": receivers}))
    done = run(amtool, "check-config", str(operators))
    assert done.returncode == 0, done.stdout + done.stderr
