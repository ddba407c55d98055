"""What the OpenAI/Anthropic fake records of each request, for assertions in tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, for assertions in tests."""

    method: str
    path: str
    """The URL path, without the query string."""
    query: dict[str, str]
    headers: dict[str, str]
    """Request headers with lower-case names."""
    body: Any
    """The parsed JSON body, or ``None`` when there was none (or it was not JSON)."""
    provider: str
    """``"openai"``, ``"azure"``, ``"anthropic"`` or ``"unknown"``."""
    endpoint: str
    """E.g. ``"chat.completions"``, ``"responses"``, ``"embeddings"``, ``"completions"``,
    ``"messages"``, ``"messages.count_tokens"``, ``"health"`` or ``"unknown"``."""
    deployment: str | None = None
    """The Azure deployment from the path, if any."""
    raw_body: bytes = b""

    @property
    def scenario(self) -> str | None:
        """The ``x-test-scenario`` header, if sent."""
        return self.headers.get("x-test-scenario")
