"""Small Python programs the suite runs ON the host under test (or inside a container there).

The host suite talks to the target only through testinfra's `host.run`, so it works the same on
the CI machine (local backend) and on a GPU host over SSH; these programs need nothing but the
`python3` every supported host has (Ansible needs it too). Each prints one JSON object.
"""

from __future__ import annotations

from tests.support.timing import TIME_SCALE


def _with_time_scale(program: str) -> str:
    """The program, told the suite's TEST_TIME_SCALE: it runs on the target, away from
    tests/support/timing.py, and stretches its own timeouts by it."""
    return f"TIME_SCALE = {TIME_SCALE!r}\n{program}"


# argv: HOST PORT [TIMEOUT]. Prints {"result": "open" | "refused" | "timeout" | "unreachable"
# | "error", "detail"}. "timeout" is what a firewall DROP looks like, "refused" a closed port.
TCP_CONNECT = r"""
import errno, json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
try:
    socket.create_connection((host, port), timeout=timeout).close()
    result, detail = "open", ""
except socket.timeout as exc:
    result, detail = "timeout", str(exc)
except ConnectionRefusedError as exc:
    result, detail = "refused", str(exc)
except OSError as exc:
    unreachable = (errno.EHOSTUNREACH, errno.ENETUNREACH)
    result, detail = ("unreachable" if exc.errno in unreachable else "error"), str(exc)
print(json.dumps({"result": result, "detail": detail}))
"""

# argv: URL [BEARER_TOKEN]. Prints {"status", "body"} (body cut at 2000 characters); status 0
# when no HTTP answer came at all.
HTTP_GET = _with_time_scale(r"""
import json, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    request.add_header("Authorization", "Bearer " + sys.argv[2])
try:
    with urllib.request.urlopen(request, timeout=10 * TIME_SCALE) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read()
except OSError as exc:
    status, body = 0, str(exc).encode()
print(json.dumps({"status": status, "body": body.decode(errors="replace")[:2000]}))
""")

# argv: URL BODY_JSON [BEARER_TOKEN]. POSTs and reads an NDJSON stream line by line, timing each
# line, as a streaming client would. Prints {"status", "lines": [[seconds, object], ...]} or
# {"status", "body"} when the answer is not a stream.
POST_STREAM = _with_time_scale(r"""
import json, sys, time, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method="POST")
request.add_header("Content-Type", "application/json")
if len(sys.argv) > 3:
    request.add_header("Authorization", "Bearer " + sys.argv[3])
start = time.monotonic()
try:
    response = urllib.request.urlopen(request, timeout=300 * TIME_SCALE)
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "body": exc.read().decode(errors="replace")[:2000]}))
    raise SystemExit(0)
lines = []
with response:
    for raw in response:
        if raw.strip():
            lines.append([time.monotonic() - start, json.loads(raw)])
print(json.dumps({"status": response.status, "lines": lines}))
""")
