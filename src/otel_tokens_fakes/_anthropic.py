"""The Anthropic Messages wire format: messages (JSON and SSE), count_tokens, error bodies."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Final

from ._controls import Controls, split_pieces, thinking_words
from ._estimate import ANTHROPIC_IMAGE_TOKENS, content_tokens, estimate_tokens, tools_tokens
from ._output import Output, ToolCall, plan_output, schema_example
from ._reply import Ctx, JSONDict, Reply, cut_point, dumps, int_field
from ._scenarios import Failure

SEARCH_RESULT_TOKENS: Final = 750


_ANTHROPIC_429_MESSAGE: Final = (
    "This request would exceed the rate limit for your organization "
    "(0b3d4b0e-7c1a-4f63-9d0e-0e1c2d3f4a5b) of 400,000 input tokens per minute. For details, "
    "refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for "
    "current usage. Please reduce the prompt length or the maximum tokens requested, or try again "
    "later."
)


def _anthropic_prompt_tokens(body: JSONDict) -> int:
    total = 7
    total += content_tokens(body.get("system"), ANTHROPIC_IMAGE_TOKENS)
    for message in body.get("messages") or []:
        total += 3
        if isinstance(message, dict):
            total += content_tokens(message.get("content"), ANTHROPIC_IMAGE_TOKENS)
        else:
            total += estimate_tokens(str(message))
    return total + tools_tokens(body.get("tools"))


def anthropic_headers(
    ctx: Ctx, *, input_tokens: int, output_tokens: int, stream: bool
) -> dict[str, str]:
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ctx.created + 1))
    headers = {
        "content-type": "text/event-stream; charset=utf-8" if stream else "application/json",
        "request-id": ctx.ids.anthropic_request(),
        "anthropic-organization-id": "0b3d4b0e-7c1a-4f63-9d0e-0e1c2d3f4a5b",
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-input-tokens-limit": "2000000",
        "anthropic-ratelimit-input-tokens-remaining": str(max(0, 2_000_000 - input_tokens)),
        "anthropic-ratelimit-input-tokens-reset": reset,
        "anthropic-ratelimit-output-tokens-limit": "400000",
        "anthropic-ratelimit-output-tokens-remaining": str(max(0, 400_000 - output_tokens)),
        "anthropic-ratelimit-output-tokens-reset": reset,
        "anthropic-ratelimit-tokens-limit": "2400000",
        "anthropic-ratelimit-tokens-remaining": str(
            max(0, 2_400_000 - input_tokens - output_tokens)
        ),
        "anthropic-ratelimit-tokens-reset": reset,
        "x-robots-tag": "none",
        "via": "1.1 google",
    }
    if stream:
        headers["cache-control"] = "no-cache"
    return headers


@dataclass(frozen=True)
class _AnthropicPrompt:
    input_tokens: int
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def total(self) -> int:
        return self.input_tokens + self.cache_read + self.cache_write


def _anthropic_prompt(estimate: int, controls: Controls) -> _AnthropicPrompt:
    cache = controls.has("cache")
    if controls.cached_tokens is not None:
        read = controls.cached_tokens
    else:
        read = estimate // 2 if cache else 0
    if controls.cache_write_tokens is not None:
        write = controls.cache_write_tokens
    else:
        write = estimate // 4 if cache else 0
    long = controls.cache_write_long or 0
    write = max(write, long)
    total = max(estimate, read + write + 1)
    return _AnthropicPrompt(total - read - write, read, write - long, long)


def _anthropic_thinking(ctx: Ctx) -> int:
    thinking = ctx.body.get("thinking")
    enabled = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    if ctx.controls.reasoning_tokens is not None:
        return ctx.controls.reasoning_tokens
    if not enabled:
        return 0
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    return min(48, budget) if isinstance(budget, int) and budget > 0 else 48


def _anthropic_tool(tools: Any) -> ToolCall | None:
    if not isinstance(tools, list):
        return None
    for tool in tools:
        if isinstance(tool, dict) and "input_schema" in tool and isinstance(tool.get("name"), str):
            args = schema_example(tool.get("input_schema"))
            return ToolCall(tool["name"], json.dumps(args, separators=(",", ":")))
    return None


def anthropic_count_tokens(ctx: Ctx) -> Reply:
    estimate = _anthropic_prompt_tokens(ctx.body)
    headers = anthropic_headers(ctx, input_tokens=0, output_tokens=0, stream=False)
    return Reply(200, headers, body={"input_tokens": estimate})


@dataclass(frozen=True)
class _Message:
    """One message, planned: what its JSON body and its stream both say."""

    id: str
    model: str
    prompt: _AnthropicPrompt
    tier: str
    out: Output
    search_pieces: list[list[str]]
    """Each web search's query, in the pieces its input is streamed in."""
    stop_reason: str
    blocks: list[JSONDict]

    @property
    def searches(self) -> int:
        return len(self.search_pieces)

    @property
    def output_tokens(self) -> int:
        searched = sum(len(p) for p in self.search_pieces)
        return self.out.reasoning + searched + len(self.out.pieces)

    @property
    def final_input(self) -> int:
        """Input tokens at the end: each search's results are read as input."""
        return self.prompt.input_tokens + SEARCH_RESULT_TOKENS * self.searches

    def usage(self, input_tokens: int, output: int) -> JSONDict:
        prompt = self.prompt
        usage: JSONDict = {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": prompt.cache_write,
            "cache_read_input_tokens": prompt.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": prompt.cache_write_5m,
                "ephemeral_1h_input_tokens": prompt.cache_write_1h,
            },
            "output_tokens": output,
            "service_tier": self.tier,
        }
        if self.searches:
            usage["server_tool_use"] = {
                "web_search_requests": self.searches,
                "web_fetch_requests": 0,
            }
        if self.out.reasoning:
            usage["output_tokens_details"] = {"thinking_tokens": self.out.reasoning}
        return usage


def anthropic_messages(ctx: Ctx) -> Reply:
    body = ctx.body
    model = ctx.model("claude-sonnet-4-5-20250929")
    prompt = _anthropic_prompt(_anthropic_prompt_tokens(body), ctx.controls)
    controls = ctx.controls
    thinking = _anthropic_thinking(ctx)
    tool = _anthropic_tool(body.get("tools")) if controls.has("tool_call") else None
    if isinstance(body.get("tool_choice"), dict) and body["tool_choice"].get("type") == "none":
        tool = None
    searches = controls.web_search_requests if controls.has("web_search") else 0
    search_queries = [
        json.dumps({"query": f"otel-tokens demo search {k + 1}"}, separators=(",", ":"))
        for k in range(searches)
    ]
    search_pieces = [split_pieces(q) for q in search_queries]
    search_output = sum(len(p) for p in search_pieces)
    pieces = tool.pieces if tool else controls.reply_pieces()
    max_tokens = int_field(body, "max_tokens")
    limit = None if max_tokens is None else max(0, max_tokens - search_output)
    out = plan_output(thinking, pieces, limit)
    if tool and out.truncated:
        tool = None
        out = Output(out.reasoning, [], True)
    message_id = ctx.ids.anthropic("msg")
    stream = bool(body.get("stream"))
    headers = anthropic_headers(
        ctx,
        input_tokens=prompt.total,
        output_tokens=out.reasoning + search_output + len(out.pieces),
        stream=stream,
    )
    message = _Message(
        id=message_id,
        model=model,
        prompt=prompt,
        tier="priority" if body.get("service_tier") == "priority" else "standard",
        out=out,
        search_pieces=search_pieces,
        stop_reason="max_tokens" if out.truncated else ("tool_use" if tool else "end_turn"),
        blocks=_blocks(ctx, message_id, out, search_queries, tool),
    )
    if not stream:
        return Reply(200, headers, body=_message_body(message))
    return Reply(200, headers, events=_message_events(ctx, message, headers["request-id"]))


def _signature(message_id: str) -> str:
    return base64.b64encode(hashlib.sha256(message_id.encode()).digest() * 3).decode()


def _blocks(
    ctx: Ctx, message_id: str, out: Output, search_queries: list[str], tool: ToolCall | None
) -> list[JSONDict]:
    """The content blocks: thinking, web searches and their results, then the tool call or
    the text."""
    blocks: list[JSONDict] = []
    if out.reasoning:
        thinking = "".join(thinking_words(out.reasoning))
        blocks.append(
            {"type": "thinking", "thinking": thinking, "signature": _signature(message_id)}
        )
    search_ids = [ctx.ids.anthropic("srvtoolu") for _ in search_queries]
    for k, (search_id, query) in enumerate(zip(search_ids, search_queries, strict=True)):
        blocks.append(
            {
                "type": "server_tool_use",
                "id": search_id,
                "name": "web_search",
                "input": json.loads(query),
            }
        )
        blocks.append(_search_result(search_id, k))
    tool_id = ctx.ids.anthropic("toolu")  # drawn with or without a tool: ids stay in step
    if tool:
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_id,
                "name": tool.name,
                "input": json.loads(tool.arguments),
            }
        )
    elif out.pieces or not blocks:
        blocks.append({"type": "text", "text": out.text})
    return blocks


def _search_result(search_id: str, k: int) -> JSONDict:
    return {
        "type": "web_search_tool_result",
        "tool_use_id": search_id,
        "content": [
            {
                "type": "web_search_result",
                "title": f"Demo search result {k + 1}",
                "url": f"https://example.com/result-{k + 1}",
                "encrypted_content": base64.b64encode(f"result {k + 1}".encode()).decode(),
                "page_age": "January 1, 2025",
            }
        ],
    }


def _message_body(message: _Message) -> JSONDict:
    return {
        "id": message.id,
        "type": "message",
        "role": "assistant",
        "model": message.model,
        "content": message.blocks,
        "stop_reason": message.stop_reason,
        "stop_sequence": None,
        "usage": message.usage(message.final_input, message.output_tokens),
    }


def _message_events(ctx: Ctx, message: _Message, request_id: str) -> list[tuple[str | None, str]]:
    events: list[tuple[str | None, str]] = []

    def emit(etype: str, payload: JSONDict) -> None:
        events.append((etype, dumps({"type": etype, **payload})))

    # message_start: the input as it stands before any search, one output token.
    start_usage = message.usage(message.prompt.input_tokens, 1)
    start_usage.pop("server_tool_use", None)
    start_usage.pop("output_tokens_details", None)
    start = {**_message_body(message), "content": [], "stop_reason": None, "usage": start_usage}
    emit("message_start", {"message": start})
    for index, block in enumerate(message.blocks):
        emit("content_block_start", {"index": index, "content_block": _block_start(block)})
        if index == 0:
            emit("ping", {})
        for delta in _block_deltas(message, block):
            emit("content_block_delta", {"index": index, "delta": delta})
        emit("content_block_stop", {"index": index})
    if ctx.controls.has("stream_error"):
        cut = cut_point(ctx.controls, len(events))
        error = {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": request_id,
        }
        return [*events[:cut], ("error", dumps(error))]
    # message_delta: cumulative usage, without the cache split and the tier.
    delta_usage = message.usage(message.final_input, message.output_tokens)
    delta_usage.pop("cache_creation", None)
    delta_usage.pop("service_tier", None)
    stop = {"stop_reason": message.stop_reason, "stop_sequence": None}
    emit("message_delta", {"delta": stop, "usage": delta_usage})
    emit("message_stop", {})
    return events


def _block_start(block: JSONDict) -> JSONDict:
    """A content block as ``content_block_start`` opens it, before its deltas."""
    btype = block["type"]
    if btype == "thinking":
        return {**block, "thinking": "", "signature": ""}
    if btype in ("server_tool_use", "tool_use"):
        return {**block, "input": {}}
    if btype == "text":
        return {"type": "text", "text": ""}
    return block


def _block_deltas(message: _Message, block: JSONDict) -> list[JSONDict]:
    btype = block["type"]
    if btype == "thinking":
        return [
            *(
                {"type": "thinking_delta", "thinking": piece}
                for piece in thinking_words(message.out.reasoning)
            ),
            {"type": "signature_delta", "signature": block["signature"]},
        ]
    if btype in ("server_tool_use", "tool_use"):
        if btype == "server_tool_use":
            searches = [b["id"] for b in message.blocks if b["type"] == "server_tool_use"]
            pieces = message.search_pieces[searches.index(block["id"])]
        else:
            pieces = message.out.pieces
        return [{"type": "input_json_delta", "partial_json": p} for p in ["", *pieces]]
    if btype == "text":
        return [{"type": "text_delta", "text": piece} for piece in message.out.pieces]
    return []


def anthropic_error(ctx: Ctx, status: int, etype: str, message: str) -> Reply:
    headers = anthropic_headers(ctx, input_tokens=0, output_tokens=0, stream=False)
    body = {
        "type": "error",
        "error": {"type": etype, "message": message},
        "request_id": headers["request-id"],
    }
    return Reply(status, headers, body=body)


# The rate-limit headers a 429 shows at zero.
_EXHAUSTED: Final = (
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-tokens-remaining",
)


def anthropic_failure(ctx: Ctx, failure: Failure) -> Reply:
    """The Anthropic answer to a failure scenario."""
    if failure is Failure.UNKNOWN_SCENARIO:
        message = f"Unknown x-test-scenario: {', '.join(ctx.controls.unknown)}"
        return anthropic_error(ctx, 400, "invalid_request_error", message)
    if failure is Failure.AUTH:
        return anthropic_error(ctx, 401, "authentication_error", "invalid x-api-key")
    if failure is Failure.BAD_REQUEST:
        return anthropic_error(
            ctx, 400, "invalid_request_error", "messages.0.content: Input should be a valid list"
        )
    if failure is Failure.RATE_LIMIT:
        reply = anthropic_error(ctx, 429, "rate_limit_error", _ANTHROPIC_429_MESSAGE)
        for key in list(reply.headers):
            if key.startswith(_EXHAUSTED):
                reply.headers[key] = "0"
        return reply
    if failure is Failure.SERVER_ERROR:
        return anthropic_error(ctx, 529, "overloaded_error", "Overloaded")
    return anthropic_error(ctx, 500, "api_error", "Internal server error")


def anthropic_validate(ctx: Ctx) -> Reply | None:
    """The 400 the real API answers a request without a required field with, else ``None``."""
    for name in ("max_tokens", "model", "messages"):
        if name == "max_tokens" and ctx.endpoint != "messages":
            continue
        if name not in ctx.body:
            return anthropic_error(ctx, 400, "invalid_request_error", f"{name}: Field required")
    return None
