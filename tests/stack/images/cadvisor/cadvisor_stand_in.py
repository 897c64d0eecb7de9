#!/usr/bin/python3
"""cAdvisor stand-in for CI: /metrics and /healthz on :8080, nothing measured (see Dockerfile)."""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

METRICS = (
    b"# HELP cadvisor_version_info A metric with a constant '1' value labeled by versions.\n"
    b"# TYPE cadvisor_version_info gauge\n"
    b'cadvisor_version_info{cadvisorVersion="ci-stand-in"} 1\n'
)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/metrics":
            body, content_type = METRICS, "text/plain; version=0.0.4; charset=utf-8"
        elif self.path == "/healthz":
            body, content_type = b"ok", "text/plain"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # Prometheus scrapes every 15 s; a line each time would drown the log.


if __name__ == "__main__":
    print(f"cAdvisor CI stand-in on :8080 (ignoring flags: {' '.join(sys.argv[1:])})", flush=True)
    try:
        ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
    except KeyboardInterrupt:  # the image's STOPSIGNAL
        pass
