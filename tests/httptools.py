"""A loopback HTTP server for the download tests: no test touches the internet."""

from __future__ import annotations

import http.server
import threading


class Mirror:
    """A loopback HTTP server; ``routes[path] = (body, declared Content-Length)``."""

    def __init__(self):
        self.routes: dict[str, tuple[bytes, int]] = {}
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                mirror.requests.append(self.path)
                if self.path not in mirror.routes:
                    self.send_error(404)
                    return
                body, declared = mirror.routes[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(declared))
                self.end_headers()
                self.wfile.write(body)  # fewer bytes than declared: the client sees truncation

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def serve(self, prefix: str, files: dict[str, bytes], declared: dict[str, int] | None = None):
        for name, body in files.items():
            self.routes[f"/{prefix}/{name}"] = (body, (declared or {}).get(name, len(body)))
        return f"{self.url}{prefix}/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def corrupt(body: bytes) -> bytes:
    flipped = bytearray(body)
    flipped[len(body) // 2] ^= 0xFF
    return bytes(flipped)
