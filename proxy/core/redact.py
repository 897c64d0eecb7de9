"""Keep credentials out of everything the proxy shows or logs.

`redact_secrets` is the one helper: every URL the proxy prints or returns goes through it. It
removes

- the user-info part of any URL (`scheme://user:password@host` → `scheme://***@host`),
- the value of any query parameter whose name ends in token, password, secret or key
  (`?token=…`, `?access_token=…`, `?sslpassword=…`),
- bearer credentials (`Bearer …`) and anything shaped like a JWT.

It works on text, not on parsed URLs, so that it also cleans messages that merely contain a URL
(driver errors, access-log lines) and never fails on a string it cannot parse.
"""

from __future__ import annotations

import re

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
