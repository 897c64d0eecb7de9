"""Keep credentials out of everything the proxy shows or logs.

`redact_secrets` is the one helper: every URL the proxy prints, returns or logs goes through it,
and `RedactingFilter` applies it to every log record. It removes

- the user-info part of any URL (`scheme://user:password@host` → `scheme://***@host`),
- the value of any query parameter whose name ends in token, password, secret or key
  (`?token=…`, `?access_token=…`, `?sslpassword=…`),
- bearer credentials (`Bearer …`) and anything shaped like a JWT.

It works on text, not on parsed URLs, so that it also cleans messages that merely contain a URL
(driver errors, access-log lines) and never fails on a string it cannot parse.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from proxy.core.logs import extra_fields

MASK = "***"

# Greedy up to the last "@" before the path: a password with an unencoded "@" is still removed.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#@]*(?:@[^\s/?#@]*)*@")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;][A-Za-z0-9_.\-]*(?:token|password|passwd|secret|key)=)[^&;#\s\"']*",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<scheme>\bBearer\s+)[A-Za-z0-9._~+/=\-]+", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")


def redact_secrets(text: str) -> str:
    """`text` (a URL, a log line, an error message) with every credential in it replaced."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m['name']}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m['scheme']}{MASK}", text)
    return _JWT.sub(MASK, text)


def _redacted_arg(value: object) -> object:
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    # An exception or URL object: replaced by its cleaned text only when that text held a
    # secret, so that %d/%r placeholders keep working for everything else.
    text = str(value)
    cleaned = redact_secrets(text)
    return cleaned if cleaned != text else value


class RedactingFilter(logging.Filter):
    """Cleans a record's message, arguments, structured fields (`extra=`, the JSON keys) and
    traceback before any handler formats it.

    The arguments are cleaned one by one rather than the formatted message replaced, because
    uvicorn's access-log formatter reads them back as a tuple (client, method, path, …).
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_secrets(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted_arg(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: _redacted_arg(arg) for key, arg in record.args.items()}
        for key, value in extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, redact_secrets(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_secrets(self._formatter.formatException(record.exc_info))
        return True
