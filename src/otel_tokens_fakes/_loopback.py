"""A threaded HTTP server on 127.0.0.1 for a provider's wire format (the local servers the
tests drive the real client libraries against share it)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no request log; reads and answers JSON."""

    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: without this, each answer waits for the
    # client's delayed ACK (about 40 ms).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    def read_json(self) -> Any:
        """The request body as JSON (``{}`` when it is empty)."""
        length = int(self.headers.get("content-length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def read_recorded(self, bodies: list[Any], error: Any) -> Any | None:
        """The request's JSON body, appended to ``bodies``; None when the ``x-test-status``
        header asks for a failure, answered with that status and ``error``."""
        body = self.read_json()
        bodies.append(body)
        status = self.headers.get("x-test-status")
        if status:
            self.send_json(int(status), error)
            return None
        return body

    def send_body(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        """A whole answer with its length (and any ``headers`` besides)."""
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_body(status, json.dumps(payload).encode(), "application/json", headers)

    def start_event_stream(self) -> None:
        """Server-sent events of unknown length: the stream ends when the connection closes."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()


class LoopbackServer:
    """Serves ``handler`` on a free loopback port while used as a context manager."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
