#!/opt/venv/bin/python
"""`ollama` CLI shim for the simulator image (CI stand-in for `ollama/ollama`).

The compose file, the Ansible playbook and operators talk to the real image through its CLI:
the healthcheck runs `ollama list`, model pulls run `ollama pull <model>`, the image starts with
`ollama serve`. This shim gives the simulator the same commands, over the same HTTP API the real
CLI uses, so none of those callers needs a CI special case. `serve` runs the project's simulator;
every other command is a client of the server named by OLLAMA_HOST, exactly like Ollama's.

Exit status: 0 on success, 1 when the server cannot be reached or answers with an error (which is
what makes `ollama list` a healthcheck), 2 for a usage error.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

DEFAULT_PORT = 11434


def listen_address() -> tuple[str, int]:
    """(host, port) from OLLAMA_HOST, which Ollama accepts as host, host:port or a URL."""
    value = os.environ.get("OLLAMA_HOST", "").strip()
    value = value.split("://", 1)[-1].rstrip("/")
    host, _, port = value.rpartition(":") if ":" in value else (value, "", "")
    return host or "127.0.0.1", int(port) if port else DEFAULT_PORT


def base_url() -> str:
    host, port = listen_address()
    # A server bound to every interface is reached on loopback, as the real client does.
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


class ServerError(Exception):
    """The server could not be reached or refused the request; the text is for the user."""


def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One request to the server; the response body, decoded when it is JSON."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base_url() + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise ServerError(_error_text(exc.read()) or f"HTTP {exc.code}") from exc
    except OSError as exc:
        raise ServerError("could not connect to ollama app, is it running?") from exc
    return json.loads(raw) if raw.strip() else None


def stream(path: str, body: dict[str, Any]) -> Any:
    """Yield each NDJSON object of a streaming response; an `error` line raises."""
    request = urllib.request.Request(
        base_url() + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            for line in response:
                if not line.strip():
                    continue
                item = json.loads(line)
                if "error" in item:
                    raise ServerError(item["error"])
                yield item
    except urllib.error.HTTPError as exc:
        raise ServerError(_error_text(exc.read()) or f"HTTP {exc.code}") from exc
    except OSError as exc:
        raise ServerError("could not connect to ollama app, is it running?") from exc


def _error_text(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace").strip()


def human_size(size: int) -> str:
    """Decimal units, as `ollama list` prints them (2019393189 -> "2.0 GB")."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("    ".join(cells).rstrip())


# Ollama's server settings the simulator models too: variable -> (flag, the simulator's own
# variable, which wins when both are set).
SERVER_SETTINGS = {
    "OLLAMA_NUM_PARALLEL": ("--num-parallel", "SIM_NUM_PARALLEL"),
    "OLLAMA_MAX_QUEUE": ("--max-queue", "SIM_MAX_QUEUE"),
}


def cmd_serve(args: list[str]) -> int:
    host, port = listen_address()
    if host == "[::]":
        host = "::"
    flags = ["--host", host, "--port", str(port)]
    for variable, (flag, own_variable) in SERVER_SETTINGS.items():
        if os.environ.get(variable) and not os.environ.get(own_variable):
            flags += [flag, os.environ[variable]]
    python = sys.executable
    os.execv(python, [python, "-m", "tests.support.simulator", *flags, *args])
    return 0  # not reached


def cmd_list(args: list[str]) -> int:
    models = call("GET", "/api/tags")["models"]
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    for model in models:
        digest = model.get("digest", "").removeprefix("sha256:")
        rows.append([model["name"], digest[:12], human_size(model["size"]), model["modified_at"]])
    print_table(rows)
    return 0


def cmd_ps(args: list[str]) -> int:
    models = call("GET", "/api/ps")["models"]
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL"]]
    for model in models:
        size, vram = model["size"], model.get("size_vram", 0)
        share = round(100 * vram / size) if size else 0
        processor = "100% CPU" if share == 0 else f"{share}% GPU"
        digest = model.get("digest", "").removeprefix("sha256:")
        rows.append([model["name"], digest[:12], human_size(size), processor, model["expires_at"]])
    print_table(rows)
    return 0


def cmd_pull(args: list[str]) -> int:
    if len(args) != 1:
        raise UsageError("usage: ollama pull MODEL")
    last = None
    for item in stream("/api/pull", {"model": args[0], "stream": True}):
        # One line per status change, not per progress tick: the output goes to logs.
        if item.get("status") != last:
            last = item.get("status")
            print(last, flush=True)
    return 0


def cmd_rm(args: list[str]) -> int:
    if not args:
        raise UsageError("usage: ollama rm MODEL [MODEL...]")
    for name in args:
        call("DELETE", "/api/delete", {"model": name})
        print(f"deleted '{name}'")
    return 0


def cmd_show(args: list[str]) -> int:
    if len(args) != 1:
        raise UsageError("usage: ollama show MODEL")
    details = call("POST", "/api/show", {"model": args[0]}).get("details", {})
    for key in ("family", "parameter_size", "quantization_level", "format"):
        if key in details:
            print(f"  {key.replace('_', ' '):<20}{details[key]}")
    return 0


def cmd_run(args: list[str]) -> int:
    if len(args) < 2:
        raise UsageError("usage: ollama run MODEL PROMPT")
    body = {"model": args[0], "prompt": " ".join(args[1:]), "stream": True}
    for item in stream("/api/generate", body):
        print(item.get("response", ""), end="", flush=True)
    print()
    return 0


def cmd_version(args: list[str]) -> int:
    print(f"ollama version is {call('GET', '/api/version')['version']}")
    return 0


class UsageError(Exception):
    """Wrong command or arguments."""


COMMANDS = {
    "serve": cmd_serve,
    "list": cmd_list,
    "ls": cmd_list,
    "ps": cmd_ps,
    "pull": cmd_pull,
    "rm": cmd_rm,
    "show": cmd_show,
    "run": cmd_run,
    "-v": cmd_version,
    "--version": cmd_version,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: ollama {{{','.join(COMMANDS)}}} ... (simulator CLI shim)", file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ServerError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
