"""A second loopback HTTP server for the remote security tests: it stands in front of a
`GenTestServer` and records what each request carried (method, path, query, headers, body).

Modes: ``"forward"`` relays the request to the target (without the query string) and its answer
back; ``"redirect"`` answers ``307`` with a ``Location`` on the target (another origin: another
port); ``"drip"`` relays, then sends the answer one byte every ``drip_s`` seconds.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Relay", "Seen"]


@dataclass(frozen=True)
class Seen:
    """One request as the relay received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class Relay:
    """See the module docstring; a context manager (``with Relay(target) as relay``)."""

    def __init__(self, target: str, *, mode: str = "forward", drip_s: float = 0.2) -> None:
        self.target = urlsplit(target)
        self.mode = mode
        self.drip_s = drip_s
        self.seen: list[Seen] = []
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The relay's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Relay:
        handler = type("Handler", (_Handler,), {"relay": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.port = self._httpd.server_address[1]
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        """(status, headers, body) for one request."""
        if self.mode == "redirect":
            location = f"{self.target.scheme}://{self.target.netloc}{path}"
            return 307, {"Location": location, "Content-Length": "0"}, b""
        conn = http.client.HTTPConnection(self.target.hostname, self.target.port, timeout=60)
        try:
            sent = {"Content-Type": "application/json"} if body else {}
            conn.request(method, path, body=body or None, headers=sent)
            res = conn.getresponse()
            return res.status, {"Content-Type": "application/json"}, res.read()
        finally:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    relay: Relay
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.relay.seen.append(Seen(method, parts.path, parts.query, headers, body))
        status, out_headers, raw = self.relay.answer(method, parts.path, headers, body)
        self.send_response(status)
        for k, v in out_headers.items():
            self.send_header(k, v)
        if "Content-Length" not in out_headers:
            self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if self.relay.mode != "drip":
            self.wfile.write(raw)
            return
        try:
            for i in range(len(raw)):
                self.wfile.write(raw[i : i + 1])
                self.wfile.flush()
                time.sleep(self.relay.drip_s)
        except OSError:  # the client gave up: that is the point
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")
