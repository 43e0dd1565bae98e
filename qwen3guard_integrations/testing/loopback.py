"""The HTTP plumbing of `GenTestServer`: its faults, error replies and the threaded server.

`Handler` reads one request, hands it to the server object's ``handle(method, path, body)``
(which returns status, JSON payload or bytes, and headers), and writes the answer; an injected
dropped connection (``ConnectionAbortedError``) closes the socket without an answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Fault", "Handler", "LoopbackServer", "Reply", "bad_request", "invalid", "read_json"]


@dataclass(frozen=True)
class Fault:
    """One request's misbehaviour (see the module docstring)."""

    status: int | None = None
    error: str = "injected fault"
    error_type: str = "overloaded"
    retry_after: float | None = None
    delay_s: float = 0.0
    body: bytes | None = None
    text: str | None = None
    drop: bool = False


class _Reply(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


class Reply(Exception):
    """An answer other than the route's normal one (an error status and its body)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


def invalid(message: str) -> Reply:
    """TGI's 422 validation error."""
    return Reply(422, {"error": f"Input validation error: {message}", "error_type": "validation"})


def bad_request(message: str) -> Reply:
    """The OpenAI-compatible 400 error."""
    return Reply(
        400, {"object": "error", "message": message, "type": "BadRequestError", "code": 400}
    )


def read_json(body: bytes, openai: bool) -> dict[str, Any]:
    """The request body as a JSON object, or the protocol's error reply."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise (bad_request if openai else invalid)("the request body is not a JSON object")
    return data


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server with a real server's backlog."""

    # A real server's accept backlog. socketserver's default of 5 overflows when 16 checks
    # connect at once on a busy machine: the kernel cannot queue the extra handshakes and the
    # client, which already sent its request, reads a reset (httpx ReadError), a transport
    # error a real TGI or vLLM (backlog 2048) would not give.
    request_queue_size = 128
    allow_reuse_address = True
    daemon_threads = True


class Handler(BaseHTTPRequestHandler):
    """One connection's requests, answered by ``server_ref.handle``."""

    server_ref: Any  # the GenTestServer: handle(method, path, body) and _track(conn, open)
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def setup(self) -> None:
        super().setup()
        self.server_ref._track(self.connection, True)

    def finish(self) -> None:
        self.server_ref._track(self.connection, False)
        super().finish()

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, payload, headers = self.server_ref.handle(method, self.path, body)
        except ConnectionAbortedError:
            self.close_connection = True
            self.connection.close()
            return
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")
