"""The demo: an application making ordinary OpenAI, Anthropic, Gemini and Bedrock calls
(`app`), and, when no provider key is set, the fake provider servers it calls offline
(``otel_tokens_fakes``, imported only then)."""

from ._offline import (
    KEY_VARIABLES,
    FakesMissingError,
    OfflineProviders,
    offline_providers,
    wants_offline,
)

__all__ = [
    "KEY_VARIABLES",
    "FakesMissingError",
    "OfflineProviders",
    "offline_providers",
    "wants_offline",
]
