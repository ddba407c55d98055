"""Small readers shared by the provider modules (no provider knowledge here)."""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.util.types import AttributeValue

from .. import semconv as sc

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_MAX_CONTENT = 64 * 1024


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def capture_content() -> bool:
    return env_flag(CAPTURE_CONTENT_ENV)


def content_json(value: Any) -> str:
    """JSON for a content attribute, cut to a bounded size."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = str(value)
    return text[:_MAX_CONTENT]


def output_attributes(request: Any, text: str) -> dict[str, AttributeValue] | None:
    """The response text as a span attribute, only when the user opted in to content
    capture."""
    if text and request.capture_content:
        return {sc.GEN_AI_OUTPUT_MESSAGES: content_json(text)}
    return None


def given(value: Any) -> bool:
    """False for None and the clients' NOT_GIVEN / Omit sentinels."""
    return value is not None and type(value).__name__ not in ("NotGiven", "Omit")


class PerURL(dict[Any, Any]):
    """An answer about a request's URL (its path), worked out once per URL: an API has few."""

    def __init__(self, answer: Callable[[str], Any]) -> None:
        super().__init__()
        self._answer = answer

    def __missing__(self, url: Any) -> Any:
        value = self._answer(str(url or "").split("?", 1)[0].rstrip("/"))
        if isinstance(url, str) and len(self) < 1024:
            self[url] = value
        return value


class PerClient(dict[int, Any]):
    """Facts worked out once per client object, found by ``id`` (a plain dict lookup on every
    call); an entry goes when its client is collected, so an id is never reused."""

    def remember(self, client: Any, facts: Any) -> None:
        key = id(client)
        try:
            weakref.finalize(client, self.pop, key, None)
        except TypeError:  # cannot know when it goes: work it out again next time
            return
        self[key] = facts


def api_request_options(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """The ``options`` of a Stainless-generated client's ``request(cast_to, options, *,
    stream=..., stream_cls=...)`` (openai, anthropic, and clients generated alike)."""
    if "options" in kwargs:
        return kwargs["options"]
    return args[1] if len(args) > 1 else None


def server_of(client: Any) -> tuple[str | None, int | None]:
    url = getattr(client, "base_url", None)
    host = getattr(url, "host", None)
    port = getattr(url, "port", None)
    return (str(host) if host else None), (int(port) if isinstance(port, int) else None)


def json_body(options: Any) -> dict[str, Any]:
    """The request body, copied one level deep (lists too).

    The call may be recorded after the user's code has moved on, and a chat loop appends to
    the very ``messages`` list it sent: the copy keeps what this request sent.
    """
    body = getattr(options, "json_data", None)
    if not isinstance(body, Mapping):
        return {}
    return {k: (list(v) if type(v) is list else v) for k, v in body.items()}


MAX_TOKEN_KEYS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def request_attributes(body: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """max tokens (whichever key the API uses), temperature and top_p of a request."""
    attrs: dict[str, AttributeValue] = {}
    for key in MAX_TOKEN_KEYS:
        value = body.get(key)
        if type(value) is int:
            attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] = value
            break
    value = body.get("temperature")
    if type(value) is float or type(value) is int:
        attrs[sc.GEN_AI_REQUEST_TEMPERATURE] = float(value)
    value = body.get("top_p")
    if type(value) is float or type(value) is int:
        attrs[sc.GEN_AI_REQUEST_TOP_P] = float(value)
    return attrs
