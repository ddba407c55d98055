"""OTLP request bodies: media types, bounded decompression, protobuf and JSON decoding.

Everything here is pure: it reads bytes and either returns a message or raises
`ClientError` with the HTTP status and gRPC code to answer. Nothing is written before a
body has decoded completely, so a malformed body never leaves anything partial behind.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from typing import Any, Final

from ._deps import json_format, status_pb2

PROTOBUF: Final = "protobuf"
JSON: Final = "json"

MEDIA_TYPES: Final = {
    "application/x-protobuf": PROTOBUF,
    "application/protobuf": PROTOBUF,
    "application/json": JSON,
}
CONTENT_TYPE: Final = {PROTOBUF: "application/x-protobuf", JSON: "application/json"}

# gRPC status codes (google.rpc.Code) used in answers.
INVALID_ARGUMENT = 3
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16
NOT_FOUND = 5


class ClientError(Exception):
    """The request is wrong and retrying it will not help: a 4xx answer."""

    def __init__(self, status: int, message: str, grpc_code: int = INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.grpc_code = grpc_code


def too_large(limit: int, what: str = "request body") -> ClientError:
    return ClientError(413, f"{what} is larger than the limit of {limit} bytes", RESOURCE_EXHAUSTED)


def media_type(content_type: str | None) -> str:
    """PROTOBUF or JSON for a Content-Type header; 415 for anything else."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    kind = MEDIA_TYPES.get(base)
    if kind is None:
        raise ClientError(
            415,
            f"unsupported Content-Type {content_type!r}: use application/x-protobuf "
            "or application/json",
        )
    return kind


def check_encoding(content_encoding: str | None) -> str:
    """The normalised Content-Encoding (``identity``, ``gzip`` or ``deflate``); 415 else."""
    enc = (content_encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return "identity"
    if enc in ("gzip", "x-gzip"):
        return "gzip"
    if enc == "deflate":
        return "deflate"
    raise ClientError(
        415, f"unsupported Content-Encoding {content_encoding!r}: use gzip, deflate or none"
    )


def decompress(data: bytes, encoding: str | None, limit: int) -> bytes:
    """Decode ``data`` per its Content-Encoding, never producing more than ``limit`` bytes.

    Decompression streams with a cap, so a gzip bomb costs at most ``limit`` bytes of
    memory before it is refused (413).
    """
    enc = check_encoding(encoding)
    if enc == "identity":
        if len(data) > limit:
            raise too_large(limit)
        return data
    if enc == "gzip":
        return _inflate(data, 16 + zlib.MAX_WBITS, limit, members=True)
    try:
        return _inflate(data, zlib.MAX_WBITS, limit, members=False)
    except ClientError as exc:
        if exc.status != 400:
            raise
        return _inflate(data, -zlib.MAX_WBITS, limit, members=False)  # raw deflate


def _inflate(data: bytes, wbits: int, limit: int, *, members: bool) -> bytes:
    out = bytearray()
    pending = data
    d = zlib.decompressobj(wbits)
    try:
        while True:
            chunk = d.decompress(pending, limit + 1 - len(out))
            out += chunk
            if len(out) > limit:
                raise too_large(limit, "decompressed request body")
            if d.eof:
                rest = d.unused_data
                if members and rest.strip(b"\0"):
                    d = zlib.decompressobj(wbits)  # another gzip member
                    pending = rest
                    continue
                if rest.strip(b"\0"):
                    raise ClientError(400, "trailing data after the compressed body")
                return bytes(out)
            pending = d.unconsumed_tail
            if not pending and not chunk:
                raise ClientError(400, "truncated compressed body")
    except zlib.error as exc:
        raise ClientError(400, f"corrupt compressed body: {exc}") from None


_HEX_ID = re.compile(r"^[0-9a-fA-F]*$")
_ID_KEYS = {"traceId": 16, "spanId": 8, "trace_id": 16, "span_id": 8}


def _hex_ids_to_base64(obj: Any) -> None:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping expects base64."""
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                size = _ID_KEYS.get(key)
                if (
                    size is not None
                    and isinstance(value, str)
                    and len(value) == 2 * size
                    and _HEX_ID.match(value)
                ):
                    node[key] = base64.b64encode(binascii.unhexlify(value)).decode()
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))


def parse(body: bytes, kind: str, message: Any) -> Any:
    """Fill ``message`` (an empty OTLP request) from ``body``; 400 if it does not decode."""
    if kind == PROTOBUF:
        try:
            message.ParseFromString(body)
        except Exception as exc:  # DecodeError, RecursionError, ...
            raise ClientError(400, f"malformed protobuf: {exc}") from None
        return message
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientError(400, f"request body is not valid UTF-8: {exc}") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ClientError(400, f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ClientError(400, "malformed OTLP/JSON: the body must be a JSON object")
    try:
        _hex_ids_to_base64(obj)
        json_format.ParseDict(obj, message, ignore_unknown_fields=True)
    except Exception as exc:  # ParseError, RecursionError, TypeError, ...
        raise ClientError(400, f"malformed OTLP/JSON: {exc}") from None
    return message


def encode(message: Any, kind: str) -> bytes:
    if kind == JSON:
        text: str = json_format.MessageToJson(message, indent=None)
        return text.encode()
    data: bytes = message.SerializeToString()
    return data


def status_body(code: int, message: str, kind: str) -> bytes:
    """A ``google.rpc.Status`` body, as OTLP/HTTP answers errors."""
    return encode(status_pb2.Status(code=code, message=message), kind)
