"""Where the monitoring files live in the repository."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO_ROOT / "dashboards"
PROMETHEUS_DIR = DASHBOARDS / "prometheus"
ALERTMANAGER_CONFIG = DASHBOARDS / "alertmanager" / "alertmanager.yml"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
GRAFANA = DASHBOARDS / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCE_FILES = sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
EXPORTER_LISTS = DASHBOARDS / "exporters"
TEXTFILES = sorted((DASHBOARDS / "node-exporter").glob("*/*.prom"))
