"""How uvicorn serves the proxy: forwarding headers, limits before authentication, logging.

The HTTP implementation is h11, not httptools (uvicorn's default when installed): httptools
keeps reading a request head however large it grows, h11 refuses an unfinished head larger
than `PROXY_MAX_HEADER_BYTES` with 400. A head that arrives whole in one read (up to asyncio's
256 KiB) is still parsed; either way what one connection can make the server hold is bounded.

Everything `python -m proxy serve` passes to `uvicorn.run` besides the app, host and port is
decided here, from the settings, so that it can be read (and tested) in one place.
"""

from __future__ import annotations

import copy
from typing import Any

from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

from proxy.core.settings import Settings

REDACTING_FILTER = "proxy.core.redact.RedactingFilter"


def logging_config() -> dict[str, Any]:
    """uvicorn's own logging setup, with every handler cleaning credentials out of each line.

    The root logger gets the same (filtered) handler at WARNING, which is what Python printed
    for the proxy's own loggers before (its last-resort handler), so their lines are cleaned too.
    """
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": REDACTING_FILTER}
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "redact"]
    config["root"] = {"handlers": ["default"], "level": "WARNING"}
    return config


def server_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments for `uvicorn.run`, other than the app, host and port."""
    return {
        "log_level": settings.proxy_log_level,
        "log_config": logging_config(),
        # Forwarding headers are believed only from the configured proxies; uvicorn's own
        # default would trust 127.0.0.1, i.e. anything reaching the proxy through a local hop.
        "proxy_headers": bool(settings.proxy_trusted_proxies),
        "forwarded_allow_ips": settings.proxy_trusted_proxies,
        "ws_max_size": 2 * settings.proxy_max_body_bytes,
        "http": H11Protocol,
        "h11_max_incomplete_event_size": settings.proxy_max_header_bytes,
        "limit_concurrency": settings.proxy_max_connections,
        "timeout_keep_alive": settings.proxy_keepalive_timeout_seconds,
    }
