"""Prometheus: the scrape config and the rules load in promtool, and every alert is unit-tested.

`promtool check config` stats every file the config names. Two of them exist only inside the
Prometheus container (`/run/secrets/proxy_metrics_token`, `/etc/prometheus/rules/*.yml`), so the
config is checked as a copy with exactly those two paths pointed at a temporary token file and
at this repository's rules directory; the test first asserts both paths are there to rewrite.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.config import SELECTORS
from dashboards.rules import ALERTS, NO_SEVERITY, PAGE, TICKET, WATCHDOG
from tests.dashboards.paths import PROMETHEUS_DIR, REPO_ROOT, RULE_FILES, RULE_TESTS
from tests.support.timing import scaled

CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"
TOKEN_PATH = "/run/secrets/proxy_metrics_token"
RULES_GLOB = "/etc/prometheus/rules/*.yml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=scaled(60), check=False)


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return loaded


def test_config_passes_promtool_check_config(promtool: str, tmp_path: Path) -> None:
    text = CONFIG.read_text()
    assert TOKEN_PATH in text and RULES_GLOB in text, "the paths to rewrite have moved"
    token = tmp_path / "proxy_metrics_token"
    token.write_text("test-token")
    copy = tmp_path / "prometheus.yml"
    copy.write_text(text.replace(TOKEN_PATH, str(token))
                    .replace(RULES_GLOB, str(PROMETHEUS_DIR / "rules" / "*.yml")))
    done = run(promtool, "check", "config", str(copy))
    assert done.returncode == 0, done.stdout + done.stderr
    # The rules were checked as part of the config, not skipped.
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in done.stdout + done.stderr


def test_rules_pass_promtool_check_rules(promtool: str) -> None:
    assert RULE_FILES, "no rule files under dashboards/prometheus/rules"
    done = run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_check_rules_catches_a_broken_expression(promtool: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(RULE_FILES[0].read_text().replace("histogram_quantile(0.95,",
                                                        "histogram_quantile(0.95,,", 1))
    done = run(promtool, "check", "rules", str(broken))
    assert done.returncode != 0, "a syntax error passed promtool check rules"


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(promtool: str, test_file: Path) -> None:
    done = run(promtool, "test", "rules", str(test_file))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_test_rules_catches_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    """The unit tests bite: the same case with the opposite expectation fails."""
    source = PROMETHEUS_DIR / "tests" / "proxy.yml"
    document = yaml.safe_load(source.read_text())
    document["rule_files"] = [str((source.parent / f).resolve()) for f in document["rule_files"]]
    silent = next(t for t in document["tests"] if t["name"].startswith("OllamaDown stays"))
    silent["input_series"][0]["values"] = "1 1 0 0 0 0 0 0"
    document["tests"] = [silent]
    mutated = tmp_path / "mutated.yml"
    mutated.write_text(yaml.safe_dump(document))
    done = run(promtool, "test", "rules", str(mutated))
    assert done.returncode != 0, "an alert that fires passed as silent"


def _alert_cases() -> dict[str, dict[str, int]]:
    cases: dict[str, dict[str, int]] = {}
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for check in test.get("alert_rule_test", []):
                kind = "fires" if check.get("exp_alerts") else "silent"
                counts = cases.setdefault(check["alertname"], {"fires": 0, "silent": 0})
                counts[kind] += 1
    return cases


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases = _alert_cases()
    # The Watchdog fires whenever rules are evaluated: it has no silent case to write.
    kinds = {alert.name: ("fires",) if alert.name == WATCHDOG else ("fires", "silent")
             for alert in ALERTS}
    missing = [
        f"{alert.name}: no {kind} case"
        for alert in ALERTS
        for kind in kinds[alert.name]
        if cases.get(alert.name, {}).get(kind, 0) == 0
    ]
    assert missing == [], "\n".join(missing)
    strays = sorted(set(cases) - {a.name for a in ALERTS})
    assert strays == [], f"tests for alerts that do not exist: {strays}"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE)
    }


def test_every_alert_is_described_and_has_a_runbook() -> None:
    anchors = _anchors(RUNBOOKS.read_text())
    rules = [r for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]
             for r in g["rules"] if "alert" in r]
    assert {r["alert"] for r in rules} == {a.name for a in ALERTS}
    for rule in rules:
        name = rule["alert"]
        if name == WATCHDOG:
            # Fires at once and always; routed by its name, never paged on.
            assert rule["labels"]["severity"] == NO_SEVERITY and "for" not in rule, rule
        else:
            assert rule["labels"]["severity"] in (PAGE, TICKET), name
            assert re.fullmatch(r"\d+m", rule["for"]), f"{name} has no `for`"
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/runbooks.md" and anchor == name.lower(), annotations["runbook_url"]
        assert anchor in anchors, f"docs/runbooks.md has no section for {name}"


def test_the_runbook_anchor_check_bites() -> None:
    assert "llmproxydown" in _anchors("## LlmProxyDown\n")
    assert "llmproxydown" not in _anchors("## LlmProxyIsDown\n")


def _jobs() -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config()["scrape_configs"]}


def _selector_job(selector: str) -> str:
    match = re.fullmatch(r'job="([^"]+)"', selector)
    assert match, selector
    return match.group(1)


def test_scrape_jobs_are_the_ones_the_rules_select() -> None:
    jobs = _jobs()
    selected = {_selector_job(s) for s in (SELECTORS.proxy, SELECTORS.gpu, SELECTORS.node,
                                           SELECTORS.cadvisor, SELECTORS.prometheus)}
    assert set(jobs) == selected
    assert set(SELECTORS.exporter_jobs.split("|")) <= set(jobs)


def test_scrape_targets() -> None:
    jobs = _jobs()
    assert jobs["proxy"]["authorization"]["credentials_file"] == TOKEN_PATH
    assert jobs["proxy"]["static_configs"][0]["targets"] == ["proxy:8000"]
    assert jobs["gpu"]["dns_sd_configs"] == [{"names": ["gpu-exporter"], "type": "A",
                                              "port": 9835}]
    assert jobs["node"]["static_configs"][0]["targets"] == ["node-exporter:9100"]
    assert jobs["cadvisor"]["static_configs"][0]["targets"] == ["cadvisor:8080"]


def test_rule_files_glob_loads_the_rules_and_not_their_tests() -> None:
    """Compose mounts dashboards/prometheus at /etc/prometheus: the glob must find the rules
    there, and the unit-test files beside them must not be loaded as rules."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert "./dashboards/prometheus:/etc/prometheus:ro" in compose["services"]["prometheus"][
        "volumes"]
    (pattern,) = config()["rule_files"]
    local = pattern.replace("/etc/prometheus/", "")
    assert sorted(PROMETHEUS_DIR.glob(local)) == RULE_FILES
    assert not set(PROMETHEUS_DIR.glob(local)) & set(RULE_TESTS)
