"""`ProviderServer`: the OpenAI, Azure OpenAI and Anthropic fake in a background thread, and
its command line."""

from __future__ import annotations

import argparse
import contextlib
import threading
import uuid
from collections.abc import Iterable, Sequence

from ._controls import DEFAULT_SLOW_DELAY, SCENARIOS
from ._http import HTTPServer
from ._ids import Ids
from ._request import RecordedRequest


class ProviderServer:
    """A local fake of the OpenAI, Azure OpenAI and Anthropic HTTP APIs, run in a background thread.

    ``scenario`` sets the default scenario(s) (comma separated) for requests that do not choose one;
    ``stream_delay`` is the pause between SSE events under ``slow_stream``. Identifiers
    (``chatcmpl-``, ``resp_``, ``msg_``, request ids...) are unique per server unless ``seed`` is
    given, which makes them repeat from run to run. See the package docstring for the endpoints
    and scenarios.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        scenario: str | Iterable[str] | None = None,
        stream_delay: float = DEFAULT_SLOW_DELAY,
        seed: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self._requested_port = port
        if isinstance(scenario, str):
            names = {s.strip().lower() for s in scenario.split(",") if s.strip()}
        else:
            names = {s.strip().lower() for s in scenario or ()}
        unknown = names - SCENARIOS
        if unknown:
            raise ValueError(f"unknown scenario(s): {', '.join(sorted(unknown))}")
        self.default_scenarios: frozenset[str] = frozenset(names)
        self.stream_delay = stream_delay
        self.verbose = verbose
        self._ids = Ids(uuid.uuid4().hex if seed is None else seed)
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> ProviderServer:
        """Bind and serve in a daemon thread. Returns ``self``."""
        if self._httpd is not None:
            return self
        self._httpd = HTTPServer((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otel-tokens-demo-server:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and release the port."""
        httpd, thread = self._httpd, self._thread
        self._httpd = None
        self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        if self._httpd is None:
            self._httpd = HTTPServer((self.host, self._requested_port), self)
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ProviderServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """Base URL for ``openai.OpenAI(base_url=...)``: :attr:`url` + ``/v1``."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for ``anthropic.Anthropic(base_url=...)``: :attr:`url`."""
        return self.url

    @property
    def azure_endpoint(self) -> str:
        """``azure_endpoint`` for ``openai.AzureOpenAI``: :attr:`url`."""
        return self.url

    # -- recorded requests -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise LookupError("no request received yet")
            return self._requests[-1]

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve forever: ``python -m otel_tokens_fakes --port 8787``."""
    parser = argparse.ArgumentParser(
        prog="python -m otel_tokens_fakes",
        description="Local fake of the OpenAI / Azure OpenAI / Anthropic HTTP APIs.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument(
        "--scenario",
        default=None,
        help=f"default scenario(s), comma separated: {sorted(SCENARIOS)}",
    )
    parser.add_argument("--stream-delay", type=float, default=DEFAULT_SLOW_DELAY)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    server = ProviderServer(
        args.host,
        args.port,
        scenario=args.scenario,
        stream_delay=args.stream_delay,
        verbose=args.verbose,
    )
    server._httpd = HTTPServer((server.host, server._requested_port), server)
    print(f"otel-tokens demo provider server on {server.url}", flush=True)
    print(f"  OpenAI:    OPENAI_BASE_URL={server.openai_base_url}", flush=True)
    print(f"  Anthropic: ANTHROPIC_BASE_URL={server.anthropic_base_url}", flush=True)
    print(f"  Azure:     AZURE_OPENAI_ENDPOINT={server.azure_endpoint}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0
