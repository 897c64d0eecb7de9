"""HS256 test tokens, minted at the call: the one place tests and scripts sign a JWT.

Call these inside the test (or a function-scoped fixture) that uses the token, never at import
time, so a token cannot expire however long the suite has been running (tests/test_suite_hygiene.py
enforces it).
"""

from __future__ import annotations

import time
from typing import Any

import jwt

SECRET = "test-secret-" + "x" * 40


def make_token(sub: str = "alice", role: str | None = "user", ttl: int = 600,
               secret: str = SECRET, **extra: Any) -> str:
    """A token for `sub` signed with `secret`; `extra` adds claims (`aud`, `iss`, ...), and a
    claim given as None is left out."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "role": role, "iat": now, "exp": now + ttl, **extra}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret,
                      algorithm="HS256")


def auth(sub: str = "alice", role: str = "user", secret: str = SECRET) -> dict[str, str]:
    """The Authorization header of a fresh token."""
    return {"Authorization": f"Bearer {make_token(sub, role, secret=secret)}"}


def admin_auth() -> dict[str, str]:
    """Headers for the test administrator, minted at the call."""
    return auth("root", "admin")
