"""A local server speaking the OpenAI-shaped wire format of Groq and Together AI (Chat
Completions JSON and SSE streams), for driving the real ``groq`` and ``together`` SDKs.

Any path ending ``/chat/completions`` (groq: ``/openai/v1/chat/completions``, together:
``/v1/chat/completions``). What a response reports is chosen per request by headers
(``extra_headers=`` on the SDK call):

* ``x-test-usage``: the ``usage`` object, JSON, verbatim (default `DEFAULT_USAGE`).
* ``x-test-stream-usage``: where a stream carries it: ``x_groq`` (Groq: the last chunk's
  ``x_groq.usage``, unasked), ``last`` (Together: the last chunk, with its finish reason,
  unasked), ``none``; with ``stream_options.include_usage`` the usage is also sent the
  OpenAI way, in a chunk of its own with no choices.
* ``x-test-chunks``: content chunks of a stream (default 3).
* ``x-test-status``: answer with this HTTP status and an OpenAI-shaped error body.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from ._loopback import LoopbackServer, QuietHandler

DEFAULT_USAGE: dict[str, Any] = {"prompt_tokens": 40, "completion_tokens": 10, "total_tokens": 50}
PIECES = ("Hi", " there", "!", " Bye")


class OpenAIShapedServer(LoopbackServer):
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        super().__init__(_handler(self))


def _handler(server: OpenAIShapedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.read_json()
            server.bodies.append(body)
            status = self.headers.get("x-test-status")
            if status is not None or not self.path.endswith("/chat/completions"):
                error = {"error": {"message": "rate limited", "type": "rate_limit_exceeded"}}
                self.send_body(int(status or 404), json.dumps(error).encode(), "application/json")
                return
            raw = self.headers.get("x-test-usage")
            usage = json.loads(raw) if raw else dict(DEFAULT_USAGE)
            model = body.get("model", "")
            if body.get("stream") is True:
                self._stream(model, body, usage)
                return
            reply = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 1_765_000_000,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(PIECES[:3])},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
            self.send_body(200, json.dumps(reply).encode(), "application/json")

        def _stream(self, model: str, body: dict[str, Any], usage: dict[str, Any]) -> None:
            where = self.headers.get("x-test-stream-usage", "last")
            chunks = int(self.headers.get("x-test-chunks", "3"))

            def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
                return {
                    "id": "chatcmpl-test",
                    "object": "chat.completion.chunk",
                    "created": 1_765_000_000,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
                }

            events = [chunk({"role": "assistant", "content": ""})]
            events += [
                chunk({"role": "assistant", "content": PIECES[i % len(PIECES)]})
                for i in range(chunks)
            ]
            last = chunk({"role": "assistant", "content": ""}, "stop")
            if where == "x_groq":
                last["x_groq"] = {"id": "req_test", "usage": usage}
            elif where == "last":
                last["usage"] = usage
            events.append(last)
            options = body.get("stream_options") or {}
            if options.get("include_usage"):
                events.append({**chunk({}), "choices": [], "usage": usage})
            payload = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
            payload += b"data: [DONE]\n\n"
            self.send_body(200, payload, "text/event-stream")

    return Handler
