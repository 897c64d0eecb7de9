"""The proxy's PROXY_UPSTREAMS from the inventory's engine hosts (group `llm_engines`).

The document is built by infra/engines.py, the same code the Pulumi program uses, imported from
the checkout this role belongs to: both deployment paths give the proxy the same routing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# playbooks/roles/stack/filter_plugins/ -> the repository root.
_ROOT = Path(__file__).resolve().parents[4]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from infra.engines import (  # noqa: E402
    DEFAULT_ENGINE_PORT,
    engine_name,
    engine_url,
    upstreams_document,
)


def engine_upstreams(hosts: list[str], hostvars: Mapping[str, Any], local_weight: float) -> str:
    """Each engine host: `engine_name` (default: from the host name), reached at
    `engine_address` (default: ansible_host, else the host name) on `engine_port` (default
    11434), with `engine_weight` (default 1)."""
    engines = []
    for host in hosts:
        given = hostvars[host]
        address = given.get("engine_address") or given.get("ansible_host") or host
        engines.append({
            "name": given.get("engine_name") or engine_name(host),
            "url": engine_url(str(address), given.get("engine_port") or DEFAULT_ENGINE_PORT),
            "weight": given.get("engine_weight", 1),
        })
    return upstreams_document(engines, local_weight)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"engine_upstreams": engine_upstreams}
