"""The three dashboards, one module each: which panel goes where, with which query and which
target line.

Queries come from `queries.py` (PromQL) and `audit_queries.py` (SQL), thresholds from
`config.py`, the Grafana JSON builders shared by all three from `panels.py`; these modules only
arrange them.
"""

from __future__ import annotations

from collections.abc import Callable

from dashboards.layouts.gpu_host import gpu_and_host
from dashboards.layouts.overview import overview
from dashboards.layouts.users_cost import users_and_cost
from dashboards.panels import Json

# File name under grafana/dashboards/ -> the function that builds it.
DASHBOARDS: dict[str, Callable[[], Json]] = {
    "llm-overview.json": overview,
    "llm-users-cost.json": users_and_cost,
    "llm-gpu-host.json": gpu_and_host,
}
