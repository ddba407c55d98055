"""A local server speaking Ollama's native API wire format, for driving the real ``ollama``
client library in tests.

Paths: ``POST /api/chat``, ``/api/generate`` (JSON, or NDJSON lines when the body has
``"stream": true``, the library's default for a streamed call), ``/api/embed`` and the
deprecated ``/api/embeddings`` (which reports no counts, as Ollama's does not).

What a response reports is chosen by headers, set on the client (``ollama.Client(host,
headers={...})``), so tests hand-work tokens and costs:

* ``x-test-usage``: the count fields of the (final) response, a JSON object merged in
  verbatim (default `DEFAULT_COUNTS`); ``none`` answers without counts.
* ``x-test-chunks``: the number of content chunks of a stream before its final ``done``
  chunk (default 3).
* ``x-test-stream-error``: after this many content chunks, a ``{"error": ...}`` line (as
  Ollama sends when a model fails mid-stream) and the end of the body.
* ``x-test-status``: answer with this HTTP status and Ollama's ``{"error": ...}`` body.

Every request is recorded (`Seen`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from ._loopback import LoopbackServer, QuietHandler

DEFAULT_COUNTS: dict[str, Any] = {"prompt_eval_count": 26, "eval_count": 3}
PIECES = ("Hello", " from", " Ollama", ".", " Bye")
CREATED = "2026-12-07T10:00:00.000000Z"


@dataclass(frozen=True)
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class OllamaServer(LoopbackServer):
    """``with OllamaServer() as s: ollama.Client(host=s.host)``."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        super().__init__(_handler(self))

    @property
    def host(self) -> str:
        return self.base_url


def _counts(headers: Any) -> dict[str, Any]:
    raw = headers.get("x-test-usage")
    if raw is None:
        return dict(DEFAULT_COUNTS)
    if raw.strip() == "none":
        return {}
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


def _piece(path: str, model: str, text: str, done: bool) -> dict[str, Any]:
    part: dict[str, Any] = {"model": model, "created_at": CREATED}
    if path == "/api/chat":
        part["message"] = {"role": "assistant", "content": text}
    else:
        part["response"] = text
    part["done"] = done
    return part


def _final(path: str, model: str, counts: dict[str, Any], text: str = "") -> dict[str, Any]:
    part = _piece(path, model, text, True)
    part.update(
        {
            "done_reason": "stop",
            "total_duration": 5_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_duration": 1_000_000,
            "eval_duration": 2_000_000,
        }
    )
    part.update(counts)
    return part


def _handler(server: OllamaServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.read_json()
            headers = {k.lower(): v for k, v in self.headers.items()}
            server.seen.append(Seen(self.path, body, headers))
            model = str(body.get("model") or "")
            status = headers.get("x-test-status")
            if self.path not in ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings"):
                status = "404"  # model management (show, pull...) is not served here
            if status is not None:
                error = {"error": f"model '{model}' not found"}
                self.send_body(int(status), json.dumps(error).encode(), "application/json")
                return
            counts = _counts(headers)
            if self.path in ("/api/embed", "/api/embeddings"):
                self._embed(model, body, counts)
            elif body.get("stream") is True:
                self._stream(model, headers, counts)
            else:
                reply = _final(self.path, model, counts, "".join(PIECES[:3]))
                self.send_body(200, json.dumps(reply).encode(), "application/json")

        def _embed(self, model: str, body: dict[str, Any], counts: dict[str, Any]) -> None:
            if self.path == "/api/embeddings":  # deprecated: no counts, as Ollama's
                reply: dict[str, Any] = {"embedding": [0.1, 0.2, 0.3]}
            else:
                inputs = body.get("input")
                n = len(inputs) if isinstance(inputs, list) else 1
                reply = {"model": model, "embeddings": [[0.1, 0.2, 0.3]] * n}
                reply.update({"total_duration": 1_000_000, "load_duration": 100_000})
                reply.update({k: v for k, v in counts.items() if k != "eval_count"})
            self.send_body(200, json.dumps(reply).encode(), "application/json")

        def _stream(self, model: str, headers: dict[str, str], counts: dict[str, Any]) -> None:
            chunks = int(headers.get("x-test-chunks", "3"))
            fail_after = headers.get("x-test-stream-error")
            lines = []
            for i in range(chunks):
                if fail_after is not None and i == int(fail_after):
                    break
                lines.append(_piece(self.path, model, PIECES[i % len(PIECES)], False))
            if fail_after is not None:
                lines.append({"error": "an error was encountered while running the model"})
            else:
                lines.append(_final(self.path, model, counts))
            payload = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
            self.send_body(200, payload, "application/x-ndjson")

    return Handler
