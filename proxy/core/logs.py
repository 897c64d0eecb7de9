"""How the proxy logs: one configuration for its own loggers and uvicorn's, as text or JSON lines.

`PROXY_LOG_FORMAT=text` (the default) writes lines a person reads in a terminal: time, level,
logger, the request id, the message, then any structured fields as `key=value`. `json` writes
one JSON object per line, with the same fields as keys, for a log collector. JSON comes from
python-json-logger, chosen over structlog because it is a plain `logging.Formatter`: uvicorn's
loggers, the `RedactingFilter` and every `logging.getLogger("proxy.…")` in the code keep working
unchanged, with nothing to wrap and no second logging API to learn.

Every line written while a request is served carries that request's server-made id
(`request_id`, the audit row's id and the `X-Request-ID` answer header): `RequestIdMiddleware`
puts it in a context variable, which asyncio copies into every task the request starts, and
`RequestContextFilter` adds it to each record. Every handler also runs `RedactingFilter`, so no
credential reaches a line, whichever logger wrote it and whatever field it is in.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS

LogFormat = Literal["text", "json"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]

# The id of the request being served, or None outside one (startup, background tasks).
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "proxy_request_id", default=None)

REDACTING_FILTER = "proxy.core.redact.RedactingFilter"
CONTEXT_FILTER = "proxy.core.logs.RequestContextFilter"
# Attributes every LogRecord has, or that the formatters below add: anything else on a record
# came from `extra=` and is a structured field of the line.
_NOT_FIELDS = ("taskName", "color_message")  # asyncio's task name; uvicorn's coloured copy
_STANDARD_ATTRS = frozenset(RESERVED_ATTRS) | {*_NOT_FIELDS, "request_id"}
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"
JSON_FIELDS = "%(levelname)s %(name)s %(request_id)s %(message)s"


class RequestContextFilter(logging.Filter):
    """Adds `request_id` to every record: the request being served, or "-" outside one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get() or "-"
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record was logged with (`extra=`), in the order given."""
    return {key: value for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRS and not key.startswith("_")}


class TextFormatter(logging.Formatter):
    """Human-readable lines: the standard prefix and message, then ` key=value` per field that
    has a value, except those the message already says."""

    # A request line's message is "GET /path 200 12.3 ms" (proxy/api/access_log.py).
    IN_MESSAGE = frozenset({"method", "path", "status", "duration_ms"})

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{key}={value}" for key, value in extra_fields(record).items()
                          if value is not None and key not in self.IN_MESSAGE)
        if not fields:
            return line
        # The traceback, if any, stays last, after the fields that belong to the first line.
        head, sep, rest = line.partition("\n")
        return f"{head} {fields}{sep}{rest}"


def logging_config(log_format: LogFormat, level: LogLevel) -> dict[str, Any]:
    """The `logging.config.dictConfig` of the proxy process (uvicorn applies it at start).

    The `proxy` logger (and so every `proxy.*` one) logs at `level` through the one handler;
    uvicorn's server messages (`uvicorn.error`, e.g. start-up, WebSocket handshakes) share it.
    uvicorn's own access lines are switched off: the proxy writes one line per request itself
    (`proxy.access`), with what uvicorn cannot know (user, model, dialect, request id).
    """
    if log_format == "json":
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": {"levelname": "level", "name": "logger"},
            # ISO 8601 in UTC, the form log collectors parse without configuration.
            "timestamp": "time",
            "reserved_attrs": [*RESERVED_ATTRS, *_NOT_FIELDS],
        }
    else:
        formatter = {"()": "proxy.core.logs.TextFormatter", "fmt": TEXT_FORMAT}
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": REDACTING_FILTER}, "context": {"()": CONTEXT_FILTER}},
        "formatters": {"proxy": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "proxy",
                # Context first: the redaction then also sees the fields it added.
                "filters": ["context", "redact"],
            },
        },
        "loggers": {
            "proxy": {"handlers": ["default"], "level": upper, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
        # Libraries' own loggers (SQLAlchemy, httpx, …): warnings and errors, through the same
        # filtered handler, as Python's last-resort handler printed them before.
        "root": {"handlers": ["default"], "level": "WARNING"},
    }
