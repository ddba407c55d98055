"""The HTTP side of the OpenAI/Anthropic fake: routing a path to its wire format and endpoint,
reading requests, writing JSON and SSE replies (and cutting them short)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

from ._anthropic import (
    anthropic_count_tokens,
    anthropic_error,
    anthropic_failure,
    anthropic_messages,
    anthropic_validate,
)
from ._controls import Controls
from ._openai import openai_error, openai_failure, openai_validate
from ._openai_chat import openai_chat, openai_completions, openai_embeddings
from ._openai_responses import openai_responses, openai_responses_input_tokens
from ._reply import Ctx, JSONDict, Reply, cut_point, dumps
from ._request import RecordedRequest
from ._scenarios import Failure, scenario_reply

if TYPE_CHECKING:
    from ._provider import ProviderServer


_OPENAI_ROUTE = re.compile(
    r"^(?P<prefix>/openai)?(?:/v1)?(?:/deployments/(?P<deployment>[^/]+))?"
    r"/(?P<endpoint>chat/completions|completions|embeddings|responses/input_tokens|responses)$"
)


_ANTHROPIC_ROUTE = re.compile(r"^(?:/v1)?/messages(?P<count>/count_tokens)?$")


def route(path: str) -> tuple[str, str, str | None]:
    match = _ANTHROPIC_ROUTE.match(path)
    if match:
        return "anthropic", "messages.count_tokens" if match.group("count") else "messages", None
    match = _OPENAI_ROUTE.match(path)
    if match:
        provider = "azure" if match.group("prefix") else "openai"
        return provider, match.group("endpoint").replace("/", "."), match.group("deployment")
    if path == "/health":
        return "unknown", "health", None
    return ("anthropic" if "messages" in path else "unknown"), "unknown", None


@dataclass(frozen=True)
class _Wire:
    """What the server needs of a wire format: its endpoints and its error answers."""

    endpoints: Mapping[str, Callable[[Ctx], Reply]]
    validate: Callable[[Ctx], Reply | None]
    failure: Callable[[Ctx, Failure], Reply]
    not_found: Callable[[Ctx, str], Reply]
    bad_json: Callable[[Ctx], Reply]


# Azure OpenAI and unknown paths are answered in the OpenAI wire format.
_OPENAI: Final = _Wire(
    endpoints={
        "chat.completions": openai_chat,
        "completions": openai_completions,
        "embeddings": openai_embeddings,
        "responses": openai_responses,
        "responses.input_tokens": openai_responses_input_tokens,
    },
    validate=openai_validate,
    failure=openai_failure,
    not_found=lambda ctx, request: openai_error(
        ctx, 404, f"Invalid URL ({request})", "invalid_request_error", None
    ),
    bad_json=lambda ctx: openai_error(
        ctx, 400, "We could not parse the JSON body of your request.", "invalid_request_error", None
    ),
)
_ANTHROPIC: Final = _Wire(
    endpoints={"messages": anthropic_messages, "messages.count_tokens": anthropic_count_tokens},
    validate=anthropic_validate,
    failure=anthropic_failure,
    not_found=lambda ctx, request: anthropic_error(ctx, 404, "not_found_error", "Not Found"),
    bad_json=lambda ctx: anthropic_error(ctx, 400, "invalid_request_error", "Invalid JSON body"),
)


class _Dropped(Exception):
    """Raised to cut the connection in the middle of a reply."""


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # bursts of concurrent clients in tests and benchmarks

    def __init__(self, address: tuple[str, int], owner: ProviderServer) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)) and not self.owner.verbose:
            return  # a client went away (keep-alive connection reset, dropped stream): not news
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "otel-tokens-demo/1.0"
    sys_version = ""
    timeout = 60
    server: HTTPServer

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.owner.verbose:
            sys.stderr.write(f"[demo-server] {self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _read_body(self) -> bytes:
        length = self.headers.get("content-length")
        if length:
            return self.rfile.read(int(length))
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            data = bytearray()
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
            return bytes(data)
        return b""

    def _handle(self, method: str) -> None:
        owner = self.server.owner
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        raw = self._read_body()
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            k = key.lower()
            headers[k] = f"{headers[k]}, {value}" if k in headers else value
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        provider, endpoint, deployment = route(path)
        owner._record(
            RecordedRequest(
                method=method,
                path=path,
                query=query,
                headers=headers,
                body=body,
                provider=provider,
                endpoint=endpoint,
                deployment=deployment,
                raw_body=raw,
            )
        )
        body_dict: JSONDict = body if isinstance(body, dict) else {}
        controls = Controls.parse(headers, body_dict, owner.default_scenarios, owner.stream_delay)
        ctx = Ctx(
            server=owner,
            ids=owner._ids,
            body=body_dict,
            controls=controls,
            provider=provider,
            endpoint=endpoint,
            deployment=deployment,
            query=query,
        )
        try:
            if controls.latency:
                time.sleep(controls.latency)
            reply = self._reply(method, ctx, bad_json)
            self._send(reply, ctx)
        except _Dropped:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _reply(self, method: str, ctx: Ctx, bad_json: bool) -> Reply:
        if ctx.endpoint == "health":
            return Reply(200, {"content-type": "application/json"}, body={"status": "ok"})
        wire = _ANTHROPIC if ctx.provider == "anthropic" else _OPENAI
        handler = wire.endpoints.get(ctx.endpoint)
        if handler is None or method != "POST":
            return wire.not_found(ctx, f"{method} {self.path}")
        if bad_json:
            return wire.bad_json(ctx)
        return wire.validate(ctx) or scenario_reply(ctx, wire.failure) or handler(ctx)

    def _send(self, reply: Reply, ctx: Ctx) -> None:
        drop = ctx.controls.has("drop_mid_stream") and reply.status == 200
        self.send_response(reply.status)
        for key, value in reply.headers.items():
            if key != "content-length":
                self.send_header(key, value)
        if reply.events is None:
            payload = (dumps(reply.body, reply.indent) + ("\n" if reply.indent else "")).encode()
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            if drop:
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                raise _Dropped
            self.wfile.write(payload)
            self.wfile.flush()
            return
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        cut = cut_point(ctx.controls, len(reply.events)) if drop else None
        delay = ctx.controls.stream_delay
        for i, (event, data) in enumerate(reply.events):
            if cut is not None and i >= cut:
                # Leave the chunked body unterminated, mid-event, like a dropped connection.
                self._write_chunk(b'data: {"id":')
                raise _Dropped
            if i and delay:
                time.sleep(delay)
            text = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
            self._write_chunk(text.encode())
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()
