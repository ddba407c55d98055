"""The providers' own count-tokens endpoints, called through the client library the user
passes (opt-in: `preflight(..., client=...)`). They are free, but they are a network call,
so nothing here runs unless a client is given.

Anthropic ``messages.count_tokens``, Gemini ``models.count_tokens``, Bedrock ``CountTokens``
(boto3 ``bedrock-runtime``) and OpenAI ``responses/input_tokens``. A failing call raises the
client's own error: the user asked for the provider's count, and a guess in its place would
be mislabelled.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ProviderCount:
    provider: str
    endpoint: str
    input_tokens: int


def provider_of(client: Any) -> str:
    module = type(client).__module__
    if module.startswith("anthropic"):
        return "anthropic"
    if module.startswith("openai"):
        return "openai"
    if module.startswith("google.genai"):
        return "gcp.gemini"
    meta = getattr(client, "meta", None)
    if getattr(getattr(meta, "service_model", None), "service_name", None) == "bedrock-runtime":
        return "aws.bedrock"
    raise TypeError(
        f"preflight(client=...) takes an anthropic, openai, google-genai or boto3 "
        f"bedrock-runtime client, not {type(client).__module__}.{type(client).__name__}"
    )


_SYSTEM = ("system", "developer")


def _split_system(
    messages: Sequence[Mapping[str, Any]],
) -> tuple[list[str], list[Mapping[str, Any]]]:
    system = [str(m.get("content", "")) for m in messages if m.get("role") in _SYSTEM]
    rest = [m for m in messages if m.get("role") not in _SYSTEM]
    return system, rest


def _text_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts = []
    for part in content or ():
        if isinstance(part, Mapping) and isinstance(part.get("text"), str):
            parts.append({"text": part["text"]})
        else:
            raise ValueError(
                "only text content can be sent to this provider's count-tokens endpoint "
                "in OpenAI message shape; pass the provider's own shape as input="
            )
    return parts


def count_with(
    client: Any,
    *,
    model: str,
    messages: Sequence[Mapping[str, Any]] | None,
    input: Any,
    tools: Sequence[Any] | None,
    system: Any,
) -> ProviderCount:
    """Input tokens of the request as the provider counts them."""
    provider = provider_of(client)
    if provider == "anthropic":
        kwargs: dict[str, Any] = {"model": model}
        if messages is not None:
            found, rest = _split_system(messages)
            kwargs["messages"] = rest
            if system is None and found:
                system = "\n\n".join(found)
        else:
            kwargs["messages"] = input
        if system is not None:
            kwargs["system"] = system
        if tools:
            kwargs["tools"] = list(tools)
        result = _sync(client.messages.count_tokens(**kwargs))
        return ProviderCount(provider, "messages.count_tokens", int(result.input_tokens))
    if provider == "openai":
        body: dict[str, Any] = {"model": model, "input": input if messages is None else messages}
        if tools:
            body["tools"] = list(tools)
        if system is not None:
            body["instructions"] = system
        counter = getattr(getattr(client.responses, "input_tokens", None), "count", None)
        if counter is not None:
            result = _sync(counter(**body))
            n = result.input_tokens
        else:  # an openai release without the resource: the same endpoint, same client
            import httpx

            response = _sync(
                client.post("/responses/input_tokens", body=body, cast_to=httpx.Response)
            )
            n = response.json()["input_tokens"]
        return ProviderCount(provider, "responses/input_tokens", int(n))
    if provider == "gcp.gemini":
        if messages is not None:
            contents: Any = [
                {
                    "role": "model" if m.get("role") == "assistant" else "user",
                    "parts": _text_parts(m.get("content")),
                }
                for m in _split_system(messages)[1]
            ]
        else:
            contents = input
        result = _sync(client.models.count_tokens(model=model, contents=contents))
        return ProviderCount(provider, "models.count_tokens", int(result.total_tokens))
    # aws.bedrock: the Converse shape
    converse: dict[str, Any] = {}
    if messages is not None:
        found, rest = _split_system(messages)
        converse["messages"] = [
            {"role": m.get("role"), "content": _text_parts(m.get("content"))} for m in rest
        ]
        if found:
            converse["system"] = [{"text": s} for s in found]
    else:
        converse["messages"] = input
    if system is not None:
        converse["system"] = [{"text": system}] if isinstance(system, str) else system
    result = client.count_tokens(modelId=model, input={"converse": converse})
    return ProviderCount(provider, "CountTokens", int(result["inputTokens"]))


def _sync(result: Any) -> Any:
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise TypeError("preflight(client=...) needs a synchronous client, not an async one")
    return result
