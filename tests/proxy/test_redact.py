"""`redact_secrets` and the logging filter: what is removed, and what is left alone."""

from __future__ import annotations

import logging

import pytest

from proxy.core.redact import RedactingFilter, redact_secrets


@pytest.mark.parametrize(("text", "expected"), [
    ("http://ollama:11434", "http://ollama:11434"),
    ("http://user:pw@ollama:11434/api", "http://***@ollama:11434/api"),
    ("https://token@host/x", "https://***@host/x"),
    ("postgresql+asyncpg://llm:p@ss@postgres:5432/llm", "postgresql+asyncpg://***@postgres:5432/llm"),
    ("redis://:secret@redis:6379/0", "redis://***@redis:6379/0"),
    ("sqlite+aiosqlite:///./proxy.db", "sqlite+aiosqlite:///./proxy.db"),
    ("http://host/path?email=a@b.example", "http://host/path?email=a@b.example"),
    ('"GET /api/llm/ws?token=abc.def HTTP/1.1" 101', '"GET /api/llm/ws?token=*** HTTP/1.1" 101'),
    ("/x?a=1&access_token=abc&b=2", "/x?a=1&access_token=***&b=2"),
    ("/x?TOKEN=abc#frag", "/x?TOKEN=***#frag"),
    ("postgresql://h/db?sslpassword=pw&sslmode=require",
     "postgresql://h/db?sslpassword=***&sslmode=require"),
    ("/x?tokens_used=3", "/x?tokens_used=3"),
    ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer ***"),
    ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig_nature-1 expired",
     "token *** expired"),
    ("cannot connect to 127.0.0.1:5432", "cannot connect to 127.0.0.1:5432"),
])
def test_redact_secrets(text: str, expected: str) -> None:
    assert redact_secrets(text) == expected


def record(msg: str, args: object) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]


def test_the_filter_cleans_arguments_and_keeps_their_shape() -> None:
    access = record('%s - "%s %s HTTP/%s" %d',
                    ("127.0.0.1:5000", "GET", "/api/llm/ws?token=s3cr3t", "1.1", 101))
    assert RedactingFilter().filter(access) is True
    assert access.args == ("127.0.0.1:5000", "GET", "/api/llm/ws?token=***", "1.1", 101)
    assert access.getMessage() == '127.0.0.1:5000 - "GET /api/llm/ws?token=*** HTTP/1.1" 101'


def test_the_filter_cleans_exceptions_and_tracebacks() -> None:
    error = ConnectionError("cannot reach redis://:pw-123@redis:6379/0")
    try:
        raise error
    except ConnectionError:
        import sys
        logged = logging.LogRecord("proxy", logging.ERROR, __file__, 1, "failed: %s (%d tries)",
                                   (error, 3), sys.exc_info())
    RedactingFilter().filter(logged)
    assert logged.getMessage() == "failed: cannot reach redis://***@redis:6379/0 (3 tries)"
    assert logged.exc_text is not None
    assert "pw-123" not in logged.exc_text
    assert "redis://***@redis:6379/0" in logged.exc_text
