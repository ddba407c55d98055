"""Canonical billable usage and the converters from each provider's usage shape."""

from ._counts import MAX_TOKENS_PER_CALL, InvalidUsageError
from ._modality import Modalities
from ._model import TokenUsage, UsageSource

# For the provider adapters in instrumentation/: the same readers the converters use.
from ._read import count as read_count
from ._read import field as read_field
from .anthropic import from_anthropic
from .cohere import CohereUnits, cohere_units, from_cohere
from .gemini import from_gemini
from .langchain import from_langchain
from .litellm import from_litellm
from .mistral import from_mistral
from .ollama import from_ollama
from .openai import from_openai_chat, from_openai_responses

__all__ = [
    "MAX_TOKENS_PER_CALL",
    "CohereUnits",
    "InvalidUsageError",
    "Modalities",
    "TokenUsage",
    "UsageSource",
    "cohere_units",
    "from_anthropic",
    "from_cohere",
    "from_gemini",
    "from_langchain",
    "from_litellm",
    "from_mistral",
    "from_ollama",
    "from_openai_chat",
    "from_openai_responses",
    "read_count",
    "read_field",
]
