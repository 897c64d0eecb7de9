#!/usr/bin/python3
"""`promtool` for the CI stand-in: Debian's promtool plus `check ready` / `check healthy`.

The compose healthcheck runs `promtool check ready --url=http://127.0.0.1:9090`, which promtool
gained in 2.46; bookworm ships 2.42. These two subcommands are answered here the way promtool
answers them (GET <url>/-/ready or /-/healthy, exit 0 only on HTTP 200); every other command runs
Debian's promtool unchanged, so rule and config checks are the real ones.
"""

import os
import sys
import urllib.request

REAL_PROMTOOL = "/usr/bin/promtool"


def probe(endpoint: str, args: list[str]) -> int:
    url = "http://localhost:9090"
    for arg in args:
        if arg.startswith("--url="):
            url = arg.removeprefix("--url=")
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/-/{endpoint}", timeout=5) as response:
            print(response.read().decode(errors="replace").strip())
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{endpoint} check failed: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "check" and argv[1] in ("ready", "healthy"):
        return probe(argv[1], argv[2:])
    os.execv(REAL_PROMTOOL, [REAL_PROMTOOL, *argv])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
