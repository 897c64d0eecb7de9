"""List and pull Ollama models over its HTTP API; run inside the proxy container by the `models`
role (stdin is this file, so nothing is installed in the container).

    python - tags URL          print the names of the models Ollama has, as a JSON list
    python - pull URL MODEL    pull MODEL, printing progress ("MODEL: pulling DIGEST 40% of 2.0 GB");
                               exit 1 naming MODEL on failure

Only the standard library: the proxy image has nothing else that can be relied on here.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import TextIO


def fail(message: str, stream: TextIO = sys.stderr) -> None:
    print(message, file=stream, flush=True)
    sys.exit(1)


def tags(url: str) -> None:
    try:
        with urllib.request.urlopen(f"{url}/api/tags", timeout=30) as response:
            models = json.load(response).get("models") or []
    except (OSError, ValueError) as exc:
        fail(f"could not list Ollama's models at {url}/api/tags: {exc}")
    print(json.dumps(sorted(model["name"] for model in models)))


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


# A pull's progress and its failure go to one stream, in order: run through `docker exec`, two
# streams reach the role's output file in any order, and the role reports the last line.
PULL_OUTPUT = sys.stdout


def pull(url: str, model: str) -> None:
    body = json.dumps({"model": model, "stream": True}).encode()
    request = urllib.request.Request(
        f"{url}/api/pull", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    started = time.monotonic()
    layers: dict[str, int] = {}
    shown: dict[str, int] = {}
    last_status = ""
    try:
        # Streamed NDJSON: errors after the first line arrive as {"error": ...} with status 200.
        with urllib.request.urlopen(request, timeout=600) as response:
            for raw in response:
                if not raw.strip():
                    continue
                line = json.loads(raw)
                if "error" in line:
                    fail(f"pulling model '{model}' failed: {line['error']}", PULL_OUTPUT)
                status = str(line.get("status", ""))
                last_status = status
                digest, total = line.get("digest"), line.get("total")
                if digest and total:
                    layers[digest] = int(total)
                    percent = int(line.get("completed", 0)) * 100 // max(1, int(total))
                    # A line per layer per tenth: the role shows the last one at each poll;
                    # enough to follow, and the output stays small.
                    if percent // 10 != shown.get(digest, -1):
                        shown[digest] = percent // 10
                        print(f"{model}: {status} {percent}% of {human(int(total))}", flush=True)
                elif status:
                    print(f"{model}: {status}", flush=True)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        try:
            detail = json.loads(detail).get("error", detail)
        except ValueError:
            pass
        fail(f"pulling model '{model}' failed: HTTP {exc.code}: {detail}", PULL_OUTPUT)
    except (OSError, ValueError) as exc:
        fail(f"pulling model '{model}' failed: {exc}", PULL_OUTPUT)
    if last_status != "success":
        fail(f"pulling model '{model}' failed: the stream ended at '{last_status}', not "
             "'success'", PULL_OUTPUT)
    print(
        f"{model}: pulled {len(layers)} layers, {human(sum(layers.values()))}"
        f" in {time.monotonic() - started:.1f} s",
        flush=True,
    )


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "tags":
        tags(argv[1].rstrip("/"))
    elif len(argv) == 3 and argv[0] == "pull":
        pull(argv[1].rstrip("/"), argv[2])
    else:
        fail("usage: ollama_models.py tags URL | pull URL MODEL")


if __name__ == "__main__":
    main(sys.argv[1:])
