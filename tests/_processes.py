"""What tests of a whole process share: an OTLP/HTTP receiver on loopback that keeps what it
is sent, an OpenAI application to run, and running a command as a user would."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent

# Two chat calls, the second long enough to bill cached-prompt-sized input; prints the usage.
OPENAI_APP = """
import json, openai
client = openai.OpenAI(max_retries=0)
usages = []
for text in ("hi", "tell me about exactly-once billing of cumulative counters " * 20):
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
    )
    usages.append(r.usage.model_dump())
print(json.dumps(usages))
"""


class OtlpSink:
    """An OTLP/HTTP receiver on loopback: every request body (gunzipped), by path."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {}
        lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with lock:
                    sink.bodies.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def requests(self, path: str, message: Any) -> list[Any]:
        """The requests to ``path``, decoded as the protobuf ``message`` type."""
        return [message.FromString(body) for body in self.bodies.get(path, [])]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end (``check``: a failure raises), its output captured as text."""
    return subprocess.run(
        list(argv),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def stop(proc: subprocess.Popen[Any] | None) -> None:
    """End ``proc`` if it still runs: terminate, and kill what does not stop in 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def run_instrumented(app: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``opentelemetry-instrument python app`` with ``env``, its output captured."""
    return run([str(BIN / "opentelemetry-instrument"), sys.executable, str(app)], env=env)
