"""Third-party modules that ship no type information, loaded as ``Any``.

protobuf's runtime, googleapis-common-protos and grpcio have stubs only in separate
packages; loading them here keeps ``mypy --strict`` clean whether or not those are there.
"""

from __future__ import annotations

import importlib
from typing import Any


def load(name: str) -> Any:
    return importlib.import_module(name)


json_format: Any = load("google.protobuf.json_format")
status_pb2: Any = load("google.rpc.status_pb2")
error_details_pb2: Any = load("google.rpc.error_details_pb2")
any_pb2: Any = load("google.protobuf.any_pb2")


def grpc() -> Any:
    """grpcio, imported only when the gRPC listener is enabled."""
    return load("grpc")
