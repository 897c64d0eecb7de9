"""What the audit tests against real proxy processes share: a request that makes one audit row,
and the rows a user has, counted directly in the database (not through the proxy)."""

from __future__ import annotations

import time

import httpx

from tests.support.database import count_rows
from tests.support.proxy_process import ProxyProcess
from tests.support.timing import scaled
from tests.support.tokens import auth

ROWS_FOR = 'SELECT count(*) FROM audit_log WHERE "user" = $1'


def generate(proxy: ProxyProcess, user: str, prompt: str = "audit me", **body: object
             ) -> httpx.Response:
    with proxy.client() as client:
        return client.post("/api/llm/generate", headers=auth(user),
                           json={"model": "llama3.2", "prompt": prompt, "stream": False,
                                 "options": {"num_predict": 3}, **body})


def wait_rows(database_url: str, user: str, expected: int, timeout: float = 20) -> int:
    """Poll until `user` has `expected` rows or the (scaled) budget is spent; return the count
    (-1 while the table cannot be read)."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        try:
            found = count_rows(database_url, ROWS_FOR, user)
        except Exception:
            found = -1
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
