"""Grafana provisioning and dashboards, checked statically (Grafana itself cannot run here).

Fixed uids; every panel and every target names a provisioned datasource by uid and type; every
panel has a unit and a description; the service targets are drawn as thresholds; the SQL panels
read only the audit-log columns the read-only role may see.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from dashboards import audit_queries
from dashboards.config import DASHBOARD_UIDS, DATASOURCES, LIMITS, TARGETS
from tests.dashboards.paths import DASHBOARD_FILES, DATASOURCE_FILES, GRAFANA, REPO_ROOT

Json = dict[str, Any]


def boards() -> dict[str, Json]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARD_FILES}


def provisioned() -> dict[str, Json]:
    sources = [s for path in DATASOURCE_FILES
               for s in yaml.safe_load(path.read_text())["datasources"]]
    return {s["uid"]: s for s in sources}


def panels(board: Json) -> list[Json]:
    found: list[Json] = board["panels"]
    return found


def panel(title: str) -> Json:
    for board in boards().values():
        for p in panels(board):
            if p["title"] == title:
                return p
    raise AssertionError(f"no panel {title!r}")


def test_datasources_have_the_fixed_uids() -> None:
    sources = provisioned()
    assert set(sources) == {DATASOURCES.prometheus, DATASOURCES.audit}
    assert sources["prometheus"]["type"] == "prometheus"
    assert sources["prometheus"]["url"] == "http://prometheus:9090"
    audit = sources["audit-postgres"]
    assert audit["type"] == "grafana-postgresql-datasource"
    assert (audit["url"], audit["user"], audit["jsonData"]["database"]) == (
        "postgres:5432", "grafana_reader", "llm")
    # The password is Grafana's environment, which compose (and Pulumi) hands it.
    assert audit["secureJsonData"]["password"] == "${GRAFANA_AUDIT_DB_PASSWORD}"
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert "GRAFANA_AUDIT_DB_PASSWORD" in compose["services"]["grafana"]["environment"]
    assert "analytics" in compose["services"]["grafana"]["networks"]
    assert "analytics" in compose["services"]["postgres"]["networks"]


def test_the_provider_loads_the_dashboards_folder_compose_mounts() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "provider.yml")
                              .read_text())["providers"][0]
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    mount = f"./dashboards/grafana/dashboards:{provider['options']['path']}:ro"
    assert mount in compose["services"]["grafana"]["volumes"]


def test_dashboards_have_their_fixed_unique_uids() -> None:
    uids = {name: board["uid"] for name, board in boards().items()}
    assert sorted(uids.values()) == sorted(
        [DASHBOARD_UIDS.overview, DASHBOARD_UIDS.users, DASHBOARD_UIDS.gpu_host])
    for name, uid in uids.items():
        assert name == f"{uid}.json"
        assert "id" not in boards()[name], "a provisioned dashboard must not carry a db id"


@pytest.mark.parametrize("name", [p.name for p in DASHBOARD_FILES])
def test_every_panel_has_a_provisioned_datasource_a_unit_and_a_description(name: str) -> None:
    board = boards()[name]
    sources = provisioned()
    assert board["panels"], name
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in panels(board):
        where = f"{name}: {p['title']!r}"
        datasource = p["datasource"]
        assert datasource["uid"] in sources, where
        assert datasource["type"] == sources[datasource["uid"]]["type"], where
        assert p["targets"], f"{where} has no query"
        for target in p["targets"]:
            assert target["datasource"] == datasource, f"{where}: target datasource differs"
            assert ("expr" in target) == (datasource["type"] == "prometheus"), where
        assert p["fieldConfig"]["defaults"]["unit"], f"{where} has no unit"
        assert p["description"].strip(), f"{where} has no description"
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, where
    for variable in board["templating"]["list"]:
        if "datasource" in variable:
            assert variable["datasource"]["uid"] in sources, variable["name"]


def _threshold_values(p: Json) -> list[float]:
    steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [s["value"] for s in steps if s["value"] is not None]


@pytest.mark.parametrize(
    ("title", "values"),
    [
        ("Generation latency", [TARGETS.latency_p95_seconds]),
        ("P95 latency", [TARGETS.latency_p95_seconds]),
        ("Time to first token by model", [TARGETS.ttft_p95_seconds]),
        ("P95 first token", [TARGETS.ttft_p95_seconds]),
        ("Generation speed by model", [TARGETS.tokens_per_second_p50_min,
                                       TARGETS.tokens_per_second_p50_good]),
        ("In-flight requests by endpoint", [TARGETS.concurrent_requests]),
        ("Error ratio by model", [TARGETS.error_ratio]),
        ("Error ratio", [TARGETS.error_ratio]),
        ("Models volume disk", [LIMITS.models_disk_ratio]),
    ],
)
def test_service_targets_are_drawn_as_thresholds(title: str, values: list[float]) -> None:
    p = panel(title)
    assert _threshold_values(p) == values
    if p["type"] == "timeseries":
        assert p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "dashed"


def _sql_panels() -> list[tuple[str, str]]:
    return [(p["title"], t["rawSql"]) for board in boards().values() for p in panels(board)
            for t in p["targets"] if "rawSql" in t]


def test_sql_panels_read_only_granted_columns_of_the_audit_log() -> None:
    queries = _sql_panels()
    assert len(queries) >= 5
    grant = (GRAFANA / "audit-reader.sql").read_text()
    granted = re.search(r"GRANT SELECT \((.*?)\)\s+ON audit_log", grant, re.DOTALL)
    assert granted is not None
    columns = {c.strip().strip('"') for c in granted.group(1).split(",")}
    assert columns == set(audit_queries.READABLE_COLUMNS)
    for title, sql in queries:
        assert re.findall(r"\bFROM\s+(\w+)", sql) and all(
            table in ("audit_log", "top") for table in re.findall(r"\bFROM\s+(\w+)", sql)), title
        for forbidden in ("prompt_text", "prompt_sha256", "client", "messages"):
            assert forbidden not in sql, f"{title} reads {forbidden}"
        assert not re.search(r"SELECT\s+\*", sql), f"{title} selects every column"
        # Dashboard variables reach SQL only quoted and escaped (:sqlstring), then cast.
        for reference in re.findall(r"\$\{[^}]*\}|\$\w+", sql):
            assert reference.startswith("$__") or reference.endswith(":sqlstring}"), (
                f"{title}: {reference} is interpolated raw")
