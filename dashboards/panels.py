"""Grafana dashboard JSON as plain dicts: datasources, targets, panels, variables, the grid.

Small builders in the spirit of grafana-foundation-sdk, without the dependency: every panel
gets a datasource by fixed uid (on the panel and on each target), a unit and a description, or
the builder refuses to make it. Which panels exist and what they query is the job of
`layouts/`, one module per dashboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dashboards.config import DATASOURCES

Json = dict[str, Any]

PROMETHEUS: Json = {"type": "prometheus", "uid": DATASOURCES.prometheus}
AUDIT: Json = {"type": "grafana-postgresql-datasource", "uid": DATASOURCES.audit}

# Grafana's "custom unit" syntax: the value followed by this text.
TOKENS_PER_SECOND = "suffix: tok/s"


def prometheus(expr: str, legend: str = "__auto", *, instant: bool = False) -> Json:
    return {
        "datasource": PROMETHEUS,
        "editorMode": "code",
        "expr": expr,
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
    }


def sql(query: str, *, table: bool = True) -> Json:
    return {
        "datasource": AUDIT,
        "editorMode": "code",
        "format": "table" if table else "time_series",
        "rawQuery": True,
        "rawSql": query,
    }


def steps(*pairs: tuple[float | None, str]) -> Json:
    """Threshold steps: (lower bound, colour); the first bound is None (minus infinity)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in pairs]}


OK_ONLY = steps((None, "green"))


def below_is_good(limit: float) -> Json:
    return steps((None, "green"), (limit, "red"))


def _panel(kind: str, title: str, description: str, unit: str, targets: Sequence[Json],
           thresholds: Json | None, datasource: Json) -> Json:
    if not description or not unit:
        raise ValueError(f"panel {title!r} needs a description and a unit")
    if not targets:
        raise ValueError(f"panel {title!r} has no query")
    for i, target in enumerate(targets):
        target["refId"] = chr(ord("A") + i)
        if target["datasource"] != datasource:
            raise ValueError(f"panel {title!r} mixes datasources")
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": datasource,
        "targets": list(targets),
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": thresholds or OK_ONLY},
            "overrides": [],
        },
    }


def timeseries(title: str, description: str, unit: str, targets: Sequence[Json], *,
               thresholds: Json | None = None, datasource: Json = PROMETHEUS,
               min_value: float | None = 0, max_value: float | None = None) -> Json:
    """A graph; `thresholds` are drawn as dashed lines (the service targets)."""
    panel = _panel("timeseries", title, description, unit, targets, thresholds, datasource)
    defaults = panel["fieldConfig"]["defaults"]
    defaults["color"] = {"mode": "palette-classic"}
    defaults["custom"] = {
        "drawStyle": "line",
        "fillOpacity": 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
    }
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    panel["options"] = {
        "legend": {"calcs": ["mean", "max"], "displayMode": "table", "placement": "bottom"},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel


def stat(title: str, description: str, unit: str, target: Json, *,
         thresholds: Json | None = None, mappings: Sequence[Json] = (),
         datasource: Json = PROMETHEUS, decimals: int | None = None) -> Json:
    """One number, coloured by its thresholds."""
    panel = _panel("stat", title, description, unit, [target], thresholds, datasource)
    defaults = panel["fieldConfig"]["defaults"]
    defaults["color"] = {"mode": "thresholds"}
    defaults["mappings"] = list(mappings)
    if decimals is not None:
        defaults["decimals"] = decimals
    panel["options"] = {
        "colorMode": "background",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": "auto",
    }
    return panel


def up_down(up_text: str, down_text: str) -> list[Json]:
    """Value mappings for a 0/1 series."""
    return [{
        "type": "value",
        "options": {
            "0": {"color": "red", "index": 1, "text": down_text},
            "1": {"color": "green", "index": 0, "text": up_text},
        },
    }]


def table(title: str, description: str, unit: str, target: Json, *,
          columns: dict[str, tuple[str, int | None]], sort_by: str,
          datasource: Json = AUDIT) -> Json:
    """A table; `columns` gives some columns their own (unit, decimals)."""
    panel = _panel("table", title, description, unit, [target], None, datasource)
    panel["fieldConfig"]["overrides"] = [
        {
            "matcher": {"id": "byName", "options": name},
            "properties": [{"id": "unit", "value": column_unit}]
            + ([] if decimals is None else [{"id": "decimals", "value": decimals}]),
        }
        for name, (column_unit, decimals) in columns.items()
    ]
    panel["options"] = {
        "cellHeight": "sm",
        "showHeader": True,
        "sortBy": [{"desc": True, "displayName": sort_by}],
    }
    return panel


def bar_gauge(title: str, description: str, unit: str, target: Json, *, field: str,
              decimals: int | None = None, datasource: Json = AUDIT) -> Json:
    """One horizontal bar per row of a table query (top-N lists)."""
    panel = _panel("bargauge", title, description, unit, [target], None, datasource)
    defaults = panel["fieldConfig"]["defaults"]
    defaults["color"] = {"mode": "continuous-BlYlRd"}
    defaults["min"] = 0
    if decimals is not None:
        defaults["decimals"] = decimals
    panel["options"] = {
        "displayMode": "gradient",
        "orientation": "horizontal",
        "reduceOptions": {"calcs": [], "fields": f"/^{field}$/", "values": True},
        "showUnfilled": True,
    }
    return panel


# --- template variables ---------------------------------------------------------------------

def query_variable(name: str, label: str, query: str) -> Json:
    """A multi-value variable from `label_values(...)`, "All" meaning any value."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROMETHEUS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "sort": 1,
    }


def custom_variable(name: str, label: str, values: Sequence[str], default: str) -> Json:
    return {
        "name": name,
        "label": label,
        "type": "custom",
        "query": ",".join(values),
        "current": {"selected": True, "text": default, "value": default},
        "options": [
            {"selected": v == default, "text": v, "value": v} for v in values
        ],
    }


def textbox_variable(name: str, label: str, default: str, description: str) -> Json:
    return {
        "name": name,
        "label": label,
        "type": "textbox",
        "description": description,
        "query": default,
        "current": {"selected": False, "text": default, "value": default},
        "options": [{"selected": True, "text": default, "value": default}],
    }


# --- the grid and the dashboard -------------------------------------------------------------

Row = tuple[int, Sequence[tuple[int, Json]]]  # (height, [(width, panel), ...])


def grid(rows: Sequence[Row]) -> list[Json]:
    """Place panels row by row on Grafana's 24-column grid and number them."""
    placed: list[Json] = []
    y = 0
    for height, cells in rows:
        if sum(width for width, _ in cells) != 24:
            raise ValueError(f"row at y={y} is not 24 columns wide")
        x = 0
        for width, panel in cells:
            placed.append({**panel, "id": len(placed) + 1,
                           "gridPos": {"h": height, "w": width, "x": x, "y": y}})
            x += width
        y += height
    return placed


def dashboard(uid: str, title: str, description: str, rows: Sequence[Row],
              variables: Sequence[Json] = ()) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["llm-stack"],
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 41,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "version": 1,
        "annotations": {"list": []},
        "links": [{
            "asDropdown": True,
            "includeVars": False,
            "keepTime": True,
            "tags": ["llm-stack"],
            "title": "LLM stack",
            "type": "dashboards",
        }],
        "templating": {"list": list(variables)},
        "panels": grid(rows),
    }
