"""A local server speaking the Gemini REST wire format (Gemini Developer API and Vertex AI),
for driving the real ``google-genai`` client in tests.

Paths: ``POST /{version}/models/{model}:{method}`` (Gemini Developer API) and
``POST /{version}/projects/{p}/locations/{l}/publishers/google/models/{model}:{method}``
(Vertex AI), for ``generateContent``, ``streamGenerateContent`` (``?alt=sse``),
``embedContent``, ``batchEmbedContents``, ``predict`` and ``countTokens``.

Everything billable is chosen per request by headers (``config={"http_options": {"headers":
...}}`` on the client call), so tests hand-work tokens and costs:

* ``x-test-usage``: the ``usageMetadata`` JSON object to answer with, verbatim (default
  `DEFAULT_USAGE`); ``none`` answers without one.
* ``x-test-model-version``: ``modelVersion`` (default: the model of the path).
* ``x-test-search-queries``: Grounding with Google Search: ``|``-separated queries put in
  the candidate's ``groundingMetadata.webSearchQueries`` (in a stream, on the chunk before
  the last, or the only one).
* ``x-test-chunks``: the number of SSE chunks of a stream (default 3); usage is in the last.
* ``x-test-status``: answer with this HTTP error status and a Google error body instead.
* ``x-test-fail-once``: a key; the first request with it gets a 429, later ones succeed.
* ``x-test-tier``: send it back as ``x-gemini-service-tier``, the header in which the Gemini
  Developer API names the service tier that served the call.

Every request is recorded (`Seen`) for assertions on what the client sent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from ._loopback import LoopbackServer, QuietHandler

DEFAULT_USAGE: dict[str, Any] = {
    "promptTokenCount": 10,
    "candidatesTokenCount": 5,
    "totalTokenCount": 15,
}
REPLY = "Hello from the local Gemini server."
_PATH = re.compile(r"^/(?P<version>[^/]+)/(?P<resource>.*?)(?P<model>[^/:]+):(?P<method>\w+)$")


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    path: str
    query: str
    body: dict[str, Any]
    headers: dict[str, str]


class GeminiServer(LoopbackServer):
    """``with GeminiServer() as s: genai.Client(api_key="x", http_options={"base_url":
    s.base_url})``."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.failed_once: set[str] = set()
        super().__init__(_handler(self))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def _usage(headers: Any) -> dict[str, Any] | None:
    raw = headers.get("x-test-usage")
    if raw is None:
        return dict(DEFAULT_USAGE)
    if raw.strip() == "none":
        return None
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


def _grounding(headers: Any) -> dict[str, Any] | None:
    raw = headers.get("x-test-search-queries")
    if not raw:
        return None
    return {
        "webSearchQueries": raw.split("|"),
        "searchEntryPoint": {"renderedContent": "<div>search suggestions</div>"},
        "groundingChunks": [{"web": {"uri": "https://example.com", "title": "example.com"}}],
    }


def _generate(model: str, headers: Any, usage: dict[str, Any] | None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": REPLY}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "modelVersion": headers.get("x-test-model-version", model),
        "responseId": "resp-gemini-1",
    }
    if (grounding := _grounding(headers)) is not None:
        response["candidates"][0]["groundingMetadata"] = grounding
    if usage is not None:
        response["usageMetadata"] = usage
    return response


def stream_pieces(text: str, count: int) -> list[str]:
    """``text`` in ``count`` pieces of whole words, in order: joined, they are ``text``."""
    words = text.split(" ")
    size = -(-len(words) // count)  # ceil: the last pieces may be empty
    return [
        " ".join(words[i * size : (i + 1) * size]) + (" " if (i + 1) * size < len(words) else "")
        for i in range(count)
    ]


def _chunks(model: str, headers: Any, usage: dict[str, Any] | None) -> list[dict[str, Any]]:
    count = int(headers.get("x-test-chunks", "3"))
    chunks = []
    for i, text in enumerate(stream_pieces(REPLY, count)):
        chunk: dict[str, Any] = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}],
            "modelVersion": headers.get("x-test-model-version", model),
            "responseId": "resp-gemini-stream",
        }
        if i == max(count - 2, 0) and (grounding := _grounding(headers)) is not None:
            chunk["candidates"][0]["groundingMetadata"] = grounding
        if i == count - 1:
            chunk["candidates"][0]["finishReason"] = "STOP"
            if usage is not None:
                chunk["usageMetadata"] = usage
        chunks.append(chunk)
    return chunks


def _embeddings(method: str, body: dict[str, Any], usage: dict[str, Any] | None) -> Any:
    if method == "predict":  # Vertex AI's text-embedding models: per-instance statistics
        instances = body.get("instances") or [{}]
        return {
            "predictions": [
                {"embeddings": {"values": [0.1, 0.2], "statistics": {"token_count": 4}}}
                for _ in instances
            ],
            "metadata": {"billableCharacterCount": 20},
        }
    if method == "batchEmbedContents":
        requests = body.get("requests") or [{}]
        response: dict[str, Any] = {"embeddings": [{"values": [0.1, 0.2]} for _ in requests]}
    else:
        response = {"embedding": {"values": [0.1, 0.2]}}
    if usage is not None:
        response["usageMetadata"] = usage
    return response


def _handler(server: GeminiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _send_json(self, status: int, payload: Any) -> None:
            tier = self.headers.get("x-test-tier")
            self.send_json(status, payload, {"x-gemini-service-tier": tier} if tier else None)

        def do_POST(self) -> None:
            path, _, query = self.path.partition("?")
            body = self.read_json()
            server.seen.append(Seen(path, query, body, dict(self.headers.items())))
            match = _PATH.match(path)
            if match is None:
                self._send_json(404, {"error": {"code": 404, "message": path}})
                return
            status = self.headers.get("x-test-status")
            once = self.headers.get("x-test-fail-once")
            if once and once not in server.failed_once:
                server.failed_once.add(once)
                status = "429"
            if status:
                self._send_json(
                    int(status),
                    {"error": {"code": int(status), "message": "test", "status": "TEST"}},
                )
                return
            model, method = match["model"], match["method"]
            usage = _usage(self.headers)
            if method == "generateContent":
                self._send_json(200, _generate(model, self.headers, usage))
            elif method == "streamGenerateContent":
                self._stream(_chunks(model, self.headers, usage))
            elif method in ("embedContent", "batchEmbedContents", "predict"):
                self._send_json(200, _embeddings(method, body, usage))
            elif method == "countTokens":
                self._send_json(200, {"totalTokens": 10})
            else:
                self._send_json(404, {"error": {"code": 404, "message": method}})

        def _stream(self, chunks: list[dict[str, Any]]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for chunk in chunks:
                data = f"data: {json.dumps(chunk)}\r\n\r\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

    return Handler
