"""A local server speaking Amazon Bedrock's runtime wire format (JSON over REST), for driving
the real ``boto3`` client in tests.

Paths: ``POST /model/{modelId}/converse``, ``/invoke``, and the streams ``/converse-stream``
and ``/invoke-with-response-stream`` in the binary AWS event-stream framing (`event_message`),
and ``/count-tokens`` (CountTokens: four characters per token of the input's text);
the model id URL-encoded, as botocore sends it (ARNs included).

Everything billable is chosen per request by headers, which a test adds through botocore's
``before-send`` event (`BedrockServer.client` wires it), so tests hand-work tokens and costs:

* ``x-test-usage``: Converse: the ``usage`` JSON object to answer with, verbatim; ``none``
  answers without one.
* ``x-test-body``: InvokeModel: the response body JSON, verbatim (the model family's own
  format, usage included or not).
* ``x-test-token-headers``: InvokeModel: a JSON object of response headers to send
  (``x-amzn-bedrock-input-token-count`` ...).
* ``x-test-service-tier``: sent back as the tier that served the call (Converse's
  ``serviceTier``, InvokeModel's ``x-amzn-bedrock-service-tier`` header).
* ``x-test-status``: answer with this HTTP error status and a Bedrock error body.
* ``x-test-stream-error``: ConverseStream: an exception message of this type in place of
  the ``metadata`` event.
* ``x-test-chunks``: InvokeModelWithResponseStream: a JSON list of the model's stream events,
  one ``chunk`` each.
* ``x-test-content-type``: InvokeModel: the response's content type (default JSON).
* ``x-test-truncate``: InvokeModel: promise 100 bytes more than the body, then hang up.

Every request is recorded (`Seen`).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

from ._loopback import LoopbackServer, QuietHandler

REPLY = "Hello from the local Bedrock server."
DEFAULT_USAGE: dict[str, Any] = {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15}


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    path: str
    model: str
    body: Any
    headers: dict[str, str]


class BedrockServer(LoopbackServer):
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        super().__init__(_handler(self))

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _count_tokens(body: Any) -> int:
    """CountTokens' answer: four characters per token of every text in the Converse input
    (``input.converse``: messages and system) or of the InvokeModel body (``input.invokeModel``)."""
    payload = body.get("input", {}) if isinstance(body, dict) else {}
    converse = payload.get("converse")
    if isinstance(converse, dict):
        texts = [
            str(block.get("text", ""))
            for message in converse.get("messages") or ()
            for block in message.get("content") or ()
            if isinstance(block, dict)
        ]
        texts += [
            str(b.get("text", "")) for b in converse.get("system") or () if isinstance(b, dict)
        ]
        return sum((len(t) + 3) // 4 for t in texts)
    invoke = payload.get("invokeModel", {})
    return (len(str(invoke.get("body", ""))) + 3) // 4


def _converse(headers: Any) -> dict[str, Any]:
    response: dict[str, Any] = {
        "output": {"message": {"role": "assistant", "content": [{"text": REPLY}]}},
        "stopReason": "end_turn",
        "metrics": {"latencyMs": 12},
    }
    raw = headers.get("x-test-usage")
    if raw is None:
        response["usage"] = dict(DEFAULT_USAGE)
    elif raw.strip() != "none":
        response["usage"] = json.loads(raw)
    tier = headers.get("x-test-service-tier")
    if tier:
        response["serviceTier"] = {"type": tier}
    return response


def event_message(event_type: str, payload: Any, message_type: str = "event") -> bytes:
    """One message of the binary AWS event-stream framing: a prelude (total and headers
    lengths, their CRC32), string headers, the JSON payload, and the message's CRC32. An
    ``exception`` message names its type in ``:exception-type``."""
    kind = ":exception-type" if message_type == "exception" else ":event-type"
    headers = b""
    for name, value in (
        (kind, event_type),
        (":content-type", "application/json"),
        (":message-type", message_type),
    ):
        encoded = value.encode()
        headers += bytes([len(name)]) + name.encode() + b"\x07"
        headers += struct.pack(">H", len(encoded)) + encoded
    body = json.dumps(payload).encode()
    prelude = struct.pack(">II", 12 + len(headers) + len(body) + 4, len(headers))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + headers + body
    return message + struct.pack(">I", binascii.crc32(message))


def _converse_events(headers: Any) -> list[bytes]:
    """ConverseStream: the reply in deltas; the usage in the last, ``metadata``, event."""
    usage = json.loads(headers.get("x-test-usage") or json.dumps(DEFAULT_USAGE))
    words = REPLY.split(" ")
    events = [event_message("messageStart", {"role": "assistant"})]
    events += [
        event_message(
            "contentBlockDelta",
            {"contentBlockIndex": 0, "delta": {"text": w + (" " if i < len(words) - 1 else "")}},
        )
        for i, w in enumerate(words)
    ]
    events.append(event_message("contentBlockStop", {"contentBlockIndex": 0}))
    events.append(event_message("messageStop", {"stopReason": "end_turn"}))
    error = headers.get("x-test-stream-error")
    if error:  # the service fails the stream before its metadata event
        events.append(event_message(error, {"message": "stream failed"}, "exception"))
        return events
    events.append(event_message("metadata", {"usage": usage, "metrics": {"latencyMs": 12}}))
    return events


def _invoke_events(headers: Any) -> list[bytes]:
    """InvokeModelWithResponseStream: each ``chunk`` carries one of the model's own stream
    events (base64 JSON); the last adds Bedrock's ``amazon-bedrock-invocationMetrics``."""
    chunks = json.loads(headers.get("x-test-chunks") or "[]")
    return [
        event_message("chunk", {"bytes": base64.b64encode(json.dumps(c).encode()).decode()})
        for c in chunks
    ]


def _handler(server: BedrockServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.send_header("x-amzn-requestid", "req-bedrock-1")
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            parts = self.path.split("?", 1)[0].split("/")
            # /model/{modelId}/{action}
            if len(parts) != 4 or parts[1] != "model":
                self._send(404, b'{"message": "not found"}', {"content-type": "application/json"})
                return
            model, action = unquote(parts[2]), parts[3]
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            server.seen.append(Seen(self.path, model, body, dict(self.headers.items())))
            status = self.headers.get("x-test-status")
            if status:
                self._send(
                    int(status),
                    b'{"message": "test error"}',
                    {
                        "content-type": "application/json",
                        "x-amzn-errortype": "ThrottlingException",
                    },
                )
                return
            if action == "count-tokens":  # CountTokens: the fake's estimate of the input
                data = json.dumps({"inputTokens": _count_tokens(body)}).encode()
                self._send(200, data, {"content-type": "application/json"})
            elif action == "converse":
                data = json.dumps(_converse(self.headers)).encode()
                self._send(200, data, {"content-type": "application/json"})
            elif action == "invoke":
                self._invoke()
            elif action in ("converse-stream", "invoke-with-response-stream"):
                events = (
                    _converse_events(self.headers)
                    if action == "converse-stream"
                    else _invoke_events(self.headers)
                )
                self._send(
                    200, b"".join(events), {"content-type": "application/vnd.amazon.eventstream"}
                )
            else:
                self._send(
                    404, b'{"message": "unknown action"}', {"content-type": "application/json"}
                )

        def _invoke(self) -> None:
            """InvokeModel: the body, content type and token headers the test chose."""
            headers = {"content-type": self.headers.get("x-test-content-type", "application/json")}
            headers.update(json.loads(self.headers.get("x-test-token-headers") or "{}"))
            tier = self.headers.get("x-test-service-tier")
            if tier:
                headers["x-amzn-bedrock-service-tier"] = tier
            data = (self.headers.get("x-test-body") or "{}").encode()
            if not self.headers.get("x-test-truncate"):
                self._send(200, data, headers)
                return
            # Promise more than is sent, then hang up.
            headers["content-length"] = str(len(data) + 100)
            self.send_response(200)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            self.close_connection = True

    return Handler
