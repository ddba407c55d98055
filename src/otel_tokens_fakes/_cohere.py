"""A local server speaking Cohere's API v2 wire format, for driving the real ``cohere``
client (``ClientV2``, ``AsyncClientV2``) in tests.

``POST /v2/chat`` (``"stream": true``: server-sent events ``message-start``,
``content-start``, ``content-delta``..., ``content-end``, ``message-end`` whose delta holds
the finish reason and the usage), ``POST /v2/embed`` and ``POST /v2/rerank`` (their billed
units under ``meta``). Chosen per request by headers (``request_options={
"additional_headers": ...}``):

* ``x-test-billed``: the ``billed_units`` JSON object (default `DEFAULT_BILLED`).
* ``x-test-tokens``: the ``tokens`` JSON object (default: ten times the billed counts, so a
  test that bills ``tokens`` would be off by far).
* ``x-test-status``: answer with this HTTP error status and an error body.
* ``x-test-cut``: a stream sends this many content deltas, then the connection closes.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from ._loopback import LoopbackServer, QuietHandler

DEFAULT_BILLED: dict[str, Any] = {"input_tokens": 10, "output_tokens": 5}
WORDS = ("Hello", " from", " the", " local", " Cohere", " server.")
REPLY = "".join(WORDS)


class CohereServer(LoopbackServer):
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        super().__init__(_handler(self))


def _event(kind: str, **data: Any) -> bytes:
    data["type"] = kind
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _handler(server: CohereServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        # A stream's end is the connection's close, as with this server from the start.
        protocol_version = "HTTP/1.0"

        def do_POST(self) -> None:
            body = self.read_recorded(server.bodies, {"message": "test error"})
            if body is None:
                return
            raw = self.headers.get("x-test-billed")
            billed = json.loads(raw) if raw else dict(DEFAULT_BILLED)
            raw = self.headers.get("x-test-tokens")
            tokens = (
                json.loads(raw)
                if raw
                else {k: float(v) * 10 for k, v in billed.items() if k.endswith("_tokens")}
            )
            if self.path == "/v2/embed":
                count = len(body.get("texts") or ())
                self.send_json(
                    200,
                    {
                        "id": "embed-local",
                        "response_type": "embeddings_by_type",
                        "embeddings": {"float": [[0.1, 0.2] for _ in range(count)]},
                        "texts": body.get("texts") or [],
                        "meta": {"api_version": {"version": "2"}, "billed_units": billed},
                    },
                )
                return
            if self.path == "/v2/rerank":
                self.send_json(
                    200,
                    {
                        "id": "rerank-local",
                        "results": [
                            {"index": i, "relevance_score": 0.5}
                            for i in range(len(body.get("documents") or ()))
                        ],
                        "meta": {"api_version": {"version": "2"}, "billed_units": billed},
                    },
                )
                return
            usage = {"billed_units": billed, "tokens": tokens}
            if not body.get("stream"):
                self.send_json(
                    200,
                    {
                        "id": "chat-local",
                        "finish_reason": "COMPLETE",
                        "message": {
                            "role": "assistant",
                            "content": [{"type": "text", "text": REPLY}],
                        },
                        "usage": usage,
                    },
                )
                return
            self.start_event_stream()
            cut = self.headers.get("x-test-cut")
            self.wfile.write(
                _event(
                    "message-start",
                    id="chat-local",
                    delta={"message": {"role": "assistant", "content": []}},
                )
            )
            self.wfile.write(
                _event(
                    "content-start",
                    index=0,
                    delta={"message": {"content": {"type": "text", "text": ""}}},
                )
            )
            for word in WORDS[: int(cut)] if cut else WORDS:
                self.wfile.write(
                    _event("content-delta", index=0, delta={"message": {"content": {"text": word}}})
                )
                self.wfile.flush()
            if cut:
                self.close_connection = True
                return
            self.wfile.write(_event("content-end", index=0))
            self.wfile.write(
                _event("message-end", delta={"finish_reason": "COMPLETE", "usage": usage})
            )
            self.close_connection = True

    return Handler
