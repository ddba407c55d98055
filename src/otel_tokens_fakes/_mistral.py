"""A local server speaking Mistral AI's wire format (La Plateforme: JSON, and server-sent
events for streams), for driving the real ``mistralai`` client in tests.

``POST /v1/chat/completions`` (``"stream": true``: SSE of ``CompletionChunk`` JSON, the
usage in the last chunk with the finish reason, then ``data: [DONE]``) and
``POST /v1/embeddings``. Chosen per request by headers (the client's ``http_headers=``):

* ``x-test-usage``: the ``usage`` JSON object to answer with (default `DEFAULT_USAGE`).
* ``x-test-status``: answer with this HTTP error status and an error body.
* ``x-test-cut``: a stream sends this many content chunks, then the connection closes:
  no usage chunk, no ``[DONE]``.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from ._loopback import LoopbackServer, QuietHandler

DEFAULT_USAGE: dict[str, Any] = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
WORDS = ("Hello", " from", " the", " local", " Mistral", " server.")
REPLY = "".join(WORDS)


class MistralServer(LoopbackServer):
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        super().__init__(_handler(self))


def _chunk(model: str, delta: dict[str, Any], **extra: Any) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
    if "finish_reason" in extra:
        choice["finish_reason"] = extra.pop("finish_reason")
    data = {"id": "cmpl-local", "object": "chat.completion.chunk", "created": 1, "model": model}
    data.update(choices=[choice], **extra)
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _handler(server: MistralServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        # A stream's end is the connection's close, as with this server from the start.
        protocol_version = "HTTP/1.0"

        def do_POST(self) -> None:
            body = self.read_recorded(server.bodies, {"object": "error", "message": "test error"})
            if body is None:
                return
            raw = self.headers.get("x-test-usage")
            usage = json.loads(raw) if raw else dict(DEFAULT_USAGE)
            model = body.get("model", "unknown")
            if self.path.endswith("/v1/embeddings"):
                inputs = body.get("inputs") or body.get("input") or []
                count = 1 if isinstance(inputs, str) else len(inputs)
                self.send_json(
                    200,
                    {
                        "id": "emb-local",
                        "object": "list",
                        "model": model,
                        "data": [
                            {"object": "embedding", "index": i, "embedding": [0.1, 0.2]}
                            for i in range(count)
                        ],
                        "usage": usage,
                    },
                )
                return
            if not body.get("stream"):
                self.send_json(
                    200,
                    {
                        "id": "cmpl-local",
                        "object": "chat.completion",
                        "created": 1,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": REPLY},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": usage,
                    },
                )
                return
            self.start_event_stream()
            cut = self.headers.get("x-test-cut")
            self.wfile.write(_chunk(model, {"role": "assistant", "content": ""}))
            words = WORDS[: int(cut)] if cut else WORDS
            for word in words:
                self.wfile.write(_chunk(model, {"content": word}))
                self.wfile.flush()
            if cut:
                self.close_connection = True
                return
            self.wfile.write(_chunk(model, {"content": ""}, finish_reason="stop", usage=usage))
            self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True

    return Handler
