"""The OpenAI (and Azure OpenAI) wire format: headers, usage parts, tool calls, stream endings
and error bodies shared by its endpoints."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ._controls import Controls
from ._ids import Ids
from ._models import is_openai_reasoning_model
from ._output import Output, ToolCall, plan_output, schema_example
from ._reply import Ctx, JSONDict, Reply, cut_point, dumps
from ._scenarios import Failure

_REASONING_BY_EFFORT: Final[Mapping[str, int]] = {
    "none": 0,
    "minimal": 0,
    "low": 32,
    "medium": 64,
    "high": 192,
    "xhigh": 384,
}


_OPENAI_429_MESSAGE: Final = (
    "Rate limit reached for {model} in organization org-OtelTokensDemo on tokens per min (TPM): "
    "Limit 200000, Used 199950, Requested 1000. Please try again in 1s. Visit "
    "https://platform.openai.com/account/rate-limits to learn more."
)


_AZURE_429_MESSAGE: Final = (
    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {api_version} "
    "have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 1 "
    "second. Please go here: https://aka.ms/oai/quotaincrease if you would like to further "
    "increase the default rate limit."
)


_AZURE_401_MESSAGE: Final = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
    "valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)


_AZURE_FILTER_CATEGORIES: Final = ("hate", "self_harm", "sexual", "violence")


def openai_headers(
    ctx: Ctx, *, prompt_tokens: int, output_tokens: int, stream: bool
) -> dict[str, str]:
    processing_ms = 80 + 7 * output_tokens + prompt_tokens // 50
    headers = {
        "content-type": "text/event-stream; charset=utf-8" if stream else "application/json",
        "x-request-id": ctx.ids.openai_request(),
        "openai-processing-ms": str(processing_ms),
        "x-envoy-upstream-service-time": str(processing_ms + 4),
    }
    if ctx.azure:
        headers.update(
            {
                "x-request-id": ctx.ids.uuid("azure-request"),
                "apim-request-id": ctx.ids.uuid("apim"),
                "x-ms-region": "East US",
                "x-ms-rai-invoked": "true",
                "azureml-model-session": "d085-20250101000000",
                "x-ms-deployment-name": ctx.deployment or "",
                "x-ratelimit-limit-requests": "1000",
                "x-ratelimit-limit-tokens": "1000000",
                "x-ratelimit-remaining-requests": "999",
                "x-ratelimit-remaining-tokens": str(
                    max(0, 1_000_000 - prompt_tokens - output_tokens)
                ),
            }
        )
        return headers
    headers.update(
        {
            "openai-organization": "user-oteltokensdemo",
            "openai-project": "proj_OtelTokensDemo000000000",
            "openai-version": "2020-10-01",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-limit-tokens": "10000000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-remaining-tokens": str(max(0, 10_000_000 - prompt_tokens - output_tokens)),
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-reset-tokens": "0s",
            "x-content-type-options": "nosniff",
        }
    )
    return headers


def openai_service_tier(body: JSONDict) -> str:
    tier = body.get("service_tier")
    if tier in ("flex", "scale", "priority"):
        return str(tier)
    if tier == "fast":
        return "priority"
    return "default"


@dataclass(frozen=True)
class PromptUsage:
    total: int
    cached: int
    written: int
    written_long: int


def openai_prompt_usage(estimate: int, controls: Controls) -> PromptUsage:
    if controls.cached_tokens is not None:
        cached = controls.cached_tokens
    elif controls.has("cache"):
        cached = estimate // 2
    else:
        cached = 0
    written = controls.cache_write_tokens or 0
    written_long = controls.cache_write_12h or 0
    written = max(written, written_long)
    total = max(estimate, cached + written)
    return PromptUsage(total=total, cached=cached, written=written, written_long=written_long)


def openai_reasoning(ctx: Ctx, model: str, effort: Any) -> int:
    if ctx.controls.reasoning_tokens is not None:
        return ctx.controls.reasoning_tokens
    if not is_openai_reasoning_model(model):
        return 0
    if isinstance(effort, str) and effort in _REASONING_BY_EFFORT:
        return _REASONING_BY_EFFORT[effort]
    return _REASONING_BY_EFFORT["medium"]


def openai_answer(
    ctx: Ctx, model: str, effort: Any, limit: int | None, *, responses_api: bool
) -> tuple[ToolCall | None, Output]:
    """What a chat completion or a response generates: the tool it calls (``tool_call``
    scenario, unless ``tool_choice`` is none) or the reply, after the reasoning tokens of
    ``effort``, within ``limit`` output tokens."""
    body = ctx.body
    reasoning = openai_reasoning(ctx, model, effort)
    tool = (
        _function_tool(body.get("tools"), responses_api) if ctx.controls.has("tool_call") else None
    )
    if body.get("tool_choice") == "none":
        tool = None
    pieces = tool.pieces if tool else ctx.controls.reply_pieces()
    return tool, plan_output(reasoning, pieces, limit)


def _function_tool(tools: Any, responses_api: bool) -> ToolCall | None:
    if not isinstance(tools, list):
        return None
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            continue
        spec = tool if responses_api else tool.get("function")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            continue
        args = schema_example(spec.get("parameters") or {"type": "object", "properties": {}})
        return ToolCall(spec["name"], json.dumps(args, separators=(",", ":")))
    return None


def azure_filter_results() -> JSONDict:
    return {cat: {"filtered": False, "severity": "safe"} for cat in _AZURE_FILTER_CATEGORIES}


def obfuscation(ids: Ids, used: int) -> str:
    return ids.b62("obf", max(2, 16 - used % 14))


def openai_stream_error_body() -> JSONDict:
    return {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def finish_openai_stream(
    ctx: Ctx, headers: dict[str, str], events: list[tuple[str | None, str]]
) -> Reply:
    if ctx.controls.has("stream_error"):
        cut = cut_point(ctx.controls, len(events))
        events = [*events[:cut], (None, dumps(openai_stream_error_body()))]
        return Reply(200, headers, events=events)
    events.append((None, "[DONE]"))
    return Reply(200, headers, events=events)


def openai_error(
    ctx: Ctx, status: int, message: str, etype: str, code: str | None, param: str | None = None
) -> Reply:
    headers = openai_headers(ctx, prompt_tokens=0, output_tokens=0, stream=False)
    body = {"error": {"message": message, "type": etype, "param": param, "code": code}}
    return Reply(status, headers, body=body, indent=2)


def openai_failure(ctx: Ctx, failure: Failure) -> Reply:
    """The OpenAI (or Azure OpenAI) answer to a failure scenario."""
    if failure is Failure.UNKNOWN_SCENARIO:
        message = f"Unknown x-test-scenario: {', '.join(ctx.controls.unknown)}"
        return openai_error(ctx, 400, message, "invalid_request_error", None)
    if failure is Failure.AUTH:
        if ctx.azure:
            return _azure_error(ctx, 401, _AZURE_401_MESSAGE)
        return openai_error(
            ctx,
            401,
            "Incorrect API key provided: test. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )
    if failure is Failure.BAD_REQUEST:
        return openai_error(
            ctx,
            400,
            "Invalid value for 'messages': the test scenario rejected this request.",
            "invalid_request_error",
            "invalid_value",
            "messages",
        )
    if failure is Failure.RATE_LIMIT:
        return _rate_limited(ctx)
    # SERVER_ERROR and INTERNAL: the same 500 on this wire format.
    body = openai_stream_error_body()["error"]
    return openai_error(ctx, 500, body["message"], "server_error", None)


def _azure_error(ctx: Ctx, status: int, message: str) -> Reply:
    """Azure's own error body: a string code, no type."""
    reply = openai_error(ctx, status, "", "", None)
    reply.body = {"error": {"code": str(status), "message": message}}
    return reply


def _rate_limited(ctx: Ctx) -> Reply:
    if ctx.azure:
        api_version = ctx.query.get("api-version", "")
        reply = _azure_error(ctx, 429, _AZURE_429_MESSAGE.format(api_version=api_version))
        reply.headers["x-ratelimit-remaining-tokens"] = "0"
        return reply
    model = str(ctx.body.get("model") or ctx.deployment or "gpt-4o-mini")
    reply = openai_error(
        ctx, 429, _OPENAI_429_MESSAGE.format(model=model), "tokens", "rate_limit_exceeded"
    )
    reply.headers["x-ratelimit-remaining-tokens"] = "0"
    reply.headers["x-ratelimit-reset-tokens"] = "1s"
    return reply


_REQUIRED: Final[Mapping[str, str | None]] = {
    "chat.completions": "messages",
    "completions": "prompt",
    "embeddings": "input",
    "responses": None,
}


def openai_validate(ctx: Ctx) -> Reply | None:
    """The 400 (or Azure 404) the real API answers a malformed request with, else ``None``."""
    body = ctx.body
    if ctx.azure and ctx.deployment is not None and "api-version" not in ctx.query:
        return _azure_error(ctx, 404, "Resource not found")
    if "model" not in body and not (ctx.azure and ctx.deployment):
        return openai_error(
            ctx, 400, "you must provide a model parameter", "invalid_request_error", None
        )
    required = _REQUIRED.get(ctx.endpoint)
    if required and required not in body:
        return openai_error(
            ctx,
            400,
            f"Missing required parameter: '{required}'.",
            "invalid_request_error",
            "missing_required_parameter",
            required,
        )
    if "stream_options" in body and body["stream_options"] is not None and not body.get("stream"):
        return openai_error(
            ctx,
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "invalid_request_error",
            None,
            "stream_options",
        )
    return None
