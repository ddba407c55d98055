"""Ollama: reads the ``ollama`` library's native API requests, responses and NDJSON streams.

Covers ``chat``, ``generate``, ``embed`` and the deprecated ``embeddings``, streamed or not,
of ``Client``, ``AsyncClient`` and the module-level functions (bound methods of a default
``Client``). The library sends every request through ``_request(cls, method, path, ...)``:
a non-streamed one through ``_request_raw`` (which returns the HTTP response), a streamed one
through a generator ``_request`` returns, which sends the request when first pulled. The
description wraps ``_request_raw`` as the request method and ``_request`` as the method that
returns a stream, so `read_request` meters a call on ``_request_raw`` when it is not
streamed and on ``_request`` when it is (see `_Site`).

Local models have no catalog price: they are priced by the user's price file (``provider:
ollama``) or reported unpriced. Where Ollama reports no count (a stream cut before its final
chunk, an old server that omits ``prompt_eval_count`` for a cached prompt, the deprecated
``/api/embeddings``), the tokens are counted with the ``tokenizer.json`` the user names in
``OTEL_TOKENS_OLLAMA_TOKENIZER``, else with ``o200k_base`` as a stand-in, and marked
estimated (docs/ollama.md).
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from ..counting import count_messages, count_text, estimate_source, register_tokenizer
from ..usage import TokenUsage, from_ollama
from ..usage import read_field as field
from ..usage.ollama import has_prompt_count
from ._adapter import Request, ResponseFacts, StreamState
from ._common import (
    PerClient,
    capture_content,
    content_json,
    output_attributes,
    request_attributes,
    server_of,
)

PROVIDER = "ollama"  # no well-known gen_ai.provider.name value: a custom one (docs/ollama.md)
TOKENIZER_ENV = "OTEL_TOKENS_OLLAMA_TOKENIZER"
# Counting keys of Ollama models: "ollama/<model>", so that a tokenizer named for Ollama
# never counts another provider's model of the same name.
_COUNTING_PREFIX = "ollama/"

_ENDPOINTS = {
    "/api/chat": "chat",
    "/api/generate": "text_completion",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
}

_log = logging.getLogger("otel_tokens")


def tokenizer_patterns(value: str | None) -> list[tuple[str, str]]:
    """``OTEL_TOKENS_OLLAMA_TOKENIZER`` as (model glob, tokenizer.json path) pairs: a path
    alone counts every Ollama model with it; ``glob=path`` entries, comma-separated, name one
    per model family (``llama3*=/models/llama3/tokenizer.json,qwen*=/models/qwen.json``)."""
    pairs: list[tuple[str, str]] = []
    for raw in (value or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        pattern, sep, path = entry.partition("=")
        if not sep:
            pattern, path = "*", entry
        pairs.append((pattern.strip().lower() or "*", path.strip()))
    return pairs


class OllamaAdapter:
    def __init__(self, *, library_span: bool = False) -> None:
        self.capture = capture_content()
        self._clients = PerClient()
        # Read once, when instrumenting. Registered in file order, so the first entry wins.
        self.tokenizers = tokenizer_patterns(os.environ.get(TOKENIZER_ENV))
        for pattern, path in reversed(self.tokenizers):
            register_tokenizer(_COUNTING_PREFIX + pattern, path)
        self._stand_in_logged: set[str] = set()

    def _server(self, client: Any) -> tuple[str | None, int | None]:
        facts: tuple[str | None, int | None] | None = self._clients.get(id(client))
        if facts is None:
            facts = server_of(getattr(client, "_client", None))  # the library's httpx client
            self._clients.remember(client, facts)
        return facts

    def read_request(self, client: Any, args: tuple[Any, ...], kwargs: Any) -> Request | None:
        # _request(cls, method, path, *, json=..., stream=...) or _request_raw(method, path,
        # *, json=...): the first meters streamed calls only, the second the others.
        if args and isinstance(args[0], type):
            if kwargs.get("stream") is not True:
                return None  # metered when it calls _request_raw
            args = args[1:]
        if len(args) < 2 or str(args[0]).upper() != "POST":
            return None
        operation = _ENDPOINTS.get(str(args[1]))
        if operation is None:
            return None  # pull, push, create, show...
        raw = kwargs.get("json")
        body = (
            {k: (list(v) if type(v) is list else v) for k, v in raw.items()}
            if isinstance(raw, Mapping)
            else {}
        )
        host, port = self._server(client)
        model = body.get("model")
        request = Request(
            operation=operation,
            provider=PROVIDER,
            model=model if type(model) is str and model else None,
            endpoint=str(args[1]),
            stream=body.get("stream") is True,
            server_address=host,
            server_port=port,
            body=body,
            capture_content=self.capture,
        )
        if self.capture:
            content = body.get("messages", body.get("prompt", body.get("input")))
            if content is not None:
                request.attributes = {sc.GEN_AI_INPUT_MESSAGES: content_json(content)}
        return request

    def request_attributes(self, request: Request) -> dict[str, AttributeValue]:
        options = request.body.get("options")
        if not isinstance(options, Mapping):
            return {}
        # Ollama's names for the request parameters the conventions record.
        return request_attributes(
            {
                "max_tokens": options.get("num_predict"),
                "temperature": options.get("temperature"),
                "top_p": options.get("top_p"),
            }
        )

    def max_output_tokens(self, request: Request) -> int | None:
        if request.operation == "embeddings":
            return 0
        options = request.body.get("options")
        limit = options.get("num_predict") if isinstance(options, Mapping) else None
        # -1 (or -2: fill the context) means no limit.
        return limit if type(limit) is int and limit >= 0 else None

    def estimate_input(self, request: Request) -> int:
        # Budget pre-flight, before the call: an estimate by nature, nothing to warn of.
        return self._count_prompt(request, _COUNTING_PREFIX + (request.model or "").lower())

    def read_response(self, request: Request, response: Any) -> ResponseFacts:
        # _request_raw's httpx response: decoded here (the library decodes it again).
        data = response.json() if callable(getattr(response, "json", None)) else response
        if not isinstance(data, Mapping):
            return ResponseFacts()
        text = _text_of(data)
        reason = data.get("done_reason")
        return ResponseFacts(
            usage=self.usage_of(request, data, text),
            model=data.get("model") or None,
            finish_reasons=(str(reason),) if reason else (),
            attributes=output_attributes(request, text),
        )

    def stream_state(self, request: Request) -> StreamState:
        return _OllamaStream(self, request)

    # --- counts --------------------------------------------------------------------------
    def usage_of(self, request: Request, final: Any, text: str) -> TokenUsage:
        """The usage of a response (or a stream's final chunk): as reported, with the prompt
        counted where the server left its count out."""
        if has_prompt_count(final):
            return from_ollama(final)
        key = self._counting_key(request)
        reported_output = field(final, "eval_count")
        output = reported_output if type(reported_output) is int else count_text(text, key)
        return TokenUsage(
            input=self._count_prompt(request, key), output=output, source=estimate_source(key)
        )

    def estimate(self, request: Request, text: str) -> TokenUsage:
        """A call with no reported counts: the prompt and ``text`` counted locally."""
        key = self._counting_key(request)
        return TokenUsage(
            input=self._count_prompt(request, key),
            output=count_text(text, key),
            source=estimate_source(key),
        )

    def _count_prompt(self, request: Request, key: str) -> int:
        body = request.body
        if request.endpoint == "/api/chat":
            tokens = count_messages(body.get("messages"), key)
            tools = body.get("tools")
            return tokens + (count_text(content_json(tools), key) if tools else 0)
        texts: list[Any] = []
        for name in ("system", "prompt", "suffix", "input"):
            value = body.get(name)
            texts.extend(value if isinstance(value, list) else [value])
        return sum(count_text(t, key) for t in texts if isinstance(t, str))

    def _counting_key(self, request: Request) -> str:
        """The model's counting key; says once per model when o200k_base stands in."""
        model = (request.model or "").lower()
        if model not in self._stand_in_logged and not any(
            fnmatch.fnmatchcase(model, p) for p, _ in self.tokenizers
        ):
            self._stand_in_logged.add(model)
            _log.warning(
                "otel-tokens: Ollama reported no token counts for a call of %r; counted "
                "with o200k_base as a stand-in for its tokenizer (usage source "
                "'estimated'). Name its tokenizer.json in %s to count it exactly.",
                request.model,
                TOKENIZER_ENV,
            )
        return _COUNTING_PREFIX + model


def _text_of(part: Any) -> str:
    """The generated text of a response or a stream chunk (thinking and tool calls too: all
    are generated tokens)."""
    message = field(part, "message")
    if message is not None:
        pieces = [field(message, "thinking"), field(message, "content")]
        calls = field(message, "tool_calls")
        if calls:
            pieces.append(content_json([_plain(c) for c in calls]))
    else:
        pieces = [field(part, "thinking"), field(part, "response")]
    return "".join(p for p in pieces if isinstance(p, str))


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(exclude_none=True) if callable(dump) else value


class _OllamaStream(StreamState):
    """NDJSON chunks: each carries a piece of the reply; the last (``done``) the counts."""

    __slots__ = ("adapter", "chunks", "final", "request", "text")

    def __init__(self, adapter: OllamaAdapter, request: Request) -> None:
        self.adapter = adapter
        self.request = request
        self.final: Any = None
        self.chunks = 0
        self.text: list[str] = []  # for a stream cut before its counts (and captured content)

    def event(self, chunk: Any) -> bool:
        self.chunks += 1
        if field(chunk, "done"):
            self.final = chunk
        text = _text_of(chunk)
        if text:
            self.text.append(text)
        return False

    def finish(self, error: BaseException | None) -> ResponseFacts:
        text = "".join(self.text)
        attributes = output_attributes(self.request, text)
        final = self.final
        if final is None:
            if error is not None and self.chunks == 0:
                return ResponseFacts(attributes=attributes)  # refused: nothing was generated
            return ResponseFacts(
                usage=self.adapter.estimate(self.request, text), attributes=attributes
            )
        reason = field(final, "done_reason")
        return ResponseFacts(
            usage=self.adapter.usage_of(self.request, final, text),
            model=field(final, "model") or None,
            finish_reasons=(str(reason),) if reason else (),
            attributes=attributes,
        )
