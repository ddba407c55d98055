"""Canonical billable usage and the converters from each provider's usage shape."""

from ._counts import MAX_TOKENS_PER_CALL, InvalidUsageError
from ._modality import Modalities
from ._model import TokenUsage, UsageSource
from .anthropic import from_anthropic
from .gemini import from_gemini
from .openai import from_openai_chat, from_openai_responses

__all__ = [
    "MAX_TOKENS_PER_CALL",
    "InvalidUsageError",
    "Modalities",
    "TokenUsage",
    "UsageSource",
    "from_anthropic",
    "from_gemini",
    "from_openai_chat",
    "from_openai_responses",
]
