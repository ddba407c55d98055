"""OpenTelemetry instrumentors for LLM client libraries.

Registered in the ``opentelemetry_instrumentor`` entry-point group, so
``opentelemetry-instrument python app.py`` finds them; or call ``instrument()`` yourself.
Both accept ``tracer_provider``, ``meter_provider``, ``catalog`` (a `Catalog`) and
``budgets`` (a `BudgetManager`). A client library is patched when the application imports
it; a call's span is current while the call runs and is finished, with its usage and cost,
when the call (or its stream) ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _descriptions
from ._instrumentor import LibraryInstrumentor

if TYPE_CHECKING:
    from .langchain import LangChainInstrumentor
    from .litellm import LiteLLMInstrumentor
    from .openai_agents import OpenAIAgentsInstrumentor

__all__ = [
    "AnthropicInstrumentor",
    "BedrockInstrumentor",
    "CohereInstrumentor",
    "GeminiInstrumentor",
    "GroqInstrumentor",
    "LangChainInstrumentor",
    "LibraryInstrumentor",
    "LiteLLMInstrumentor",
    "MistralInstrumentor",
    "OllamaInstrumentor",
    "OpenAIAgentsInstrumentor",
    "OpenAIInstrumentor",
    "TogetherInstrumentor",
]


class OpenAIInstrumentor(LibraryInstrumentor):
    """Meters every call of the ``openai`` client (sync and async, Azure included).

    ``include_usage``: ask streams for their usage chunk (hidden from your code); by default
    where the endpoint is known to support it (OpenAI, Azure OpenAI)."""

    description = _descriptions.OPENAI


class AnthropicInstrumentor(LibraryInstrumentor):
    """Meters every Messages call of the ``anthropic`` client (Bedrock and Vertex included)."""

    description = _descriptions.ANTHROPIC


class GeminiInstrumentor(LibraryInstrumentor):
    """Meters the ``google-genai`` client's non-streamed calls (Gemini Developer API and
    Vertex AI): ``generate_content``, chats and ``embed_content``, sync and async. Streams
    are not metered yet (docs/gemini.md)."""

    description = _descriptions.GEMINI


class BedrockInstrumentor(LibraryInstrumentor):
    """Meters ``boto3``'s ``bedrock-runtime`` calls: ``converse`` and ``invoke_model``
    (Anthropic, Amazon Nova, Meta Llama bodies; other models by Bedrock's token-count
    headers). Streams are not metered yet (docs/bedrock.md)."""

    description = _descriptions.BEDROCK


class OllamaInstrumentor(LibraryInstrumentor):
    """Meters the ``ollama`` library's native API calls: ``chat``, ``generate``, ``embed`` and
    ``embeddings``, streamed or not, of ``Client``, ``AsyncClient`` and the module-level
    functions (docs/ollama.md)."""

    description = _descriptions.OLLAMA


class GroqInstrumentor(LibraryInstrumentor):
    """Meters the ``groq`` SDK's calls (chat completions, streams, sync and async) with the
    OpenAI adapter, as provider ``groq`` (docs/openai-compatible.md)."""

    description = _descriptions.GROQ


class TogetherInstrumentor(LibraryInstrumentor):
    """Meters the ``together`` SDK's calls (chat completions, completions, embeddings,
    streams, sync and async) with the OpenAI adapter, as provider ``together``
    (docs/openai-compatible.md)."""

    description = _descriptions.TOGETHER


class MistralInstrumentor(LibraryInstrumentor):
    """Meters the ``mistralai`` client (2.4.10 and later): chat ``complete``/``stream``, FIM and
    embeddings, sync and async, cache reads included (docs/mistral.md)."""

    description = _descriptions.MISTRAL


class CohereInstrumentor(LibraryInstrumentor):
    """Meters the ``cohere`` v2 client (``ClientV2``, ``AsyncClientV2``): ``chat``,
    ``chat_stream``, ``embed`` and ``rerank``, billed by ``usage.billed_units``
    (docs/cohere.md)."""

    description = _descriptions.COHERE


# The framework instrumentors (and the framework machinery, usage converters and counting
# they use) load when first named: an application that meters only its clients does not
# pay for them at start-up.
_FRAMEWORKS = {
    "LangChainInstrumentor": ".langchain",
    "LiteLLMInstrumentor": ".litellm",
    "OpenAIAgentsInstrumentor": ".openai_agents",
}


def __getattr__(name: str) -> Any:
    module = _FRAMEWORKS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
