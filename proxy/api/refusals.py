"""Error answers in the dialect of the path they were asked on (`proxy.core.dialects`): one
function for answers made before the app has run (middleware), one for the exception handlers."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import Scope, Send

from proxy.core.dialects import dialect_of, error_body, wire_status


def refusal(request: Request, status: int, message: str, code: str | None = None,
            extra: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answer in the dialect of the request's path (`proxy.core.dialects`)."""
    dialect = dialect_of(request.url.path)
    return JSONResponse(error_body(dialect, status, message, code, extra),
                        status_code=wire_status(dialect, status), headers=headers)


async def send_refusal(scope: Scope, send: Send, status: int, message: str,
                       headers: list[tuple[bytes, bytes]], code: str | None = None,
                       close: bool = False) -> None:
    """Answer before the app has run, in the dialect of the request's path."""
    dialect = dialect_of(scope.get("path", ""))
    content = json.dumps(error_body(dialect, status, message, code)).encode()
    all_headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(content)).encode()), *headers]
    if close:
        # The body was not (all) read: closing is the only way to be done with the connection.
        all_headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": wire_status(dialect, status),
                "headers": all_headers})
    await send({"type": "http.response.body", "body": content})
