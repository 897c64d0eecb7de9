"""The engines the stack's proxy routes to, as the PROXY_UPSTREAMS document (the proxy's routing
YAML, proxy/upstream/router.py, written as JSON on one line).

The one place the document is built: the Pulumi program (`engines` stack config) and the Ansible
stack role (the inventory's `llm_engines` group, through its `engine_upstreams` filter) both call
`upstreams_document`, so the two paths give the proxy the same routing. Standard library only:
the Ansible controller imports it from the checkout without the project's dependencies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

# The stack's own Ollama, as the proxy container reaches it on the `backend` network.
LOCAL_ENGINE = {"name": "local", "kind": "ollama", "url": "http://ollama:11434"}
DEFAULT_ENGINE_PORT = 11434
# What the proxy accepts as an upstream's name (proxy/upstream/router.py, UpstreamConfig).
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")


class EngineError(ValueError):
    """An engine entry the proxy could not route to; the message names the entry and the fix."""


def engine_name(host: str) -> str:
    """An upstream name from a host name: `gpu-2.example.internal` is `gpu-2-example-internal`."""
    name = re.sub(r"[^a-z0-9_\-]+", "-", host.lower()).strip("-_")[:63]
    if not _NAME.match(name):
        raise EngineError(f"no upstream name can be made of {host!r}: set the engine's name")
    return name


def engine_url(address: str, port: int | str = DEFAULT_ENGINE_PORT) -> str:
    """Where the proxies reach an engine host's published Ollama."""
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"http://{host}:{int(port)}"


def upstreams_document(engines: Iterable[Mapping[str, Any]], local_weight: float = 1) -> str:
    """PROXY_UPSTREAMS for the stack's proxy: its own Ollama (weight `local_weight`; 0 leaves it
    out) and each engine ({name, url, weight}). Empty when there is no engine: the proxy then
    uses its one Ollama at OLLAMA_URL, as a stack without engine hosts always has."""
    engines = list(engines)
    if not engines:
        return ""
    upstreams: list[dict[str, Any]] = []
    if float(local_weight) > 0:
        upstreams.append({**LOCAL_ENGINE, "weight": float(local_weight)})
    for engine in engines:
        name, url = engine.get("name"), engine.get("url")
        if not isinstance(name, str) or not _NAME.match(name):
            raise EngineError(
                f"engine {name!r}: a name is lower-case letters, digits, - and _ (at most 63)")
        if not isinstance(url, str) or not re.match(r"^https?://", url):
            raise EngineError(f"engine {name!r}: url {url!r} must start with http:// or https://")
        weight = float(engine.get("weight", 1))
        if not 0 < weight <= 1000:
            raise EngineError(f"engine {name!r}: weight {weight} must be above 0, at most 1000")
        upstreams.append({"name": name, "kind": "ollama", "url": url, "weight": weight})
    names = [u["name"] for u in upstreams]
    if len(set(names)) != len(names):
        raise EngineError(f"engine names must be unique (and not {LOCAL_ENGINE['name']!r} "
                          f"while the stack's own Ollama is routed to): {names}")
    return json.dumps({"upstreams": upstreams}, separators=(",", ":"))
