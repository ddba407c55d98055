"""OpenAI chat completions, legacy completions and embeddings (JSON and SSE)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._estimate import (
    OPENAI_IMAGE_TOKENS,
    content_tokens,
    estimate_tokens,
    text_input_tokens,
    text_inputs,
    tools_tokens,
)
from ._openai import (
    PromptUsage,
    azure_filter_results,
    finish_openai_stream,
    obfuscation,
    openai_answer,
    openai_headers,
    openai_prompt_usage,
    openai_service_tier,
)
from ._output import Output, ToolCall, plan_output
from ._reply import Ctx, JSONDict, Reply, dict_field, dumps, int_field


def _chat_prompt_tokens(body: JSONDict) -> int:
    total = 3
    for message in body.get("messages") or []:
        total += 4
        if not isinstance(message, dict):
            total += estimate_tokens(str(message))
            continue
        total += content_tokens(message.get("content"), OPENAI_IMAGE_TOKENS)
        if isinstance(message.get("name"), str):
            total += estimate_tokens(message["name"])
        for call in message.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, dict) else {}
            total += estimate_tokens(
                str(function.get("name", "")) + str(function.get("arguments", ""))
            )
    return total + tools_tokens(body.get("tools"))


def _chat_usage(prompt: PromptUsage, completion: int, reasoning: int) -> JSONDict:
    prompt_details: JSONDict = {"cached_tokens": prompt.cached, "audio_tokens": 0}
    if prompt.written:
        prompt_details["cache_write_tokens"] = prompt.written
    return {
        "prompt_tokens": prompt.total,
        "completion_tokens": completion,
        "total_tokens": prompt.total + completion,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


@dataclass(frozen=True)
class _Chat:
    """One chat completion, planned: what its JSON body and its stream both say."""

    id: str
    model: str
    fingerprint: str
    tier: str
    out: Output
    tool: ToolCall | None
    finish: str
    usage: JSONDict
    call_ids: list[str]


def openai_chat(ctx: Ctx) -> Reply:
    body = ctx.body
    model = ctx.model("gpt-4o-mini-2024-07-18")
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    n = max(1, min(int(n or 1), 8))
    prompt = openai_prompt_usage(_chat_prompt_tokens(body), ctx.controls)
    limit = int_field(body, "max_completion_tokens", "max_tokens")
    tool, out = openai_answer(ctx, model, body.get("reasoning_effort"), limit, responses_api=False)
    completion = n * (out.reasoning + len(out.pieces))
    completion_id = ctx.ids.chatcmpl()
    stream = bool(body.get("stream"))
    headers = openai_headers(
        ctx, prompt_tokens=prompt.total, output_tokens=completion, stream=stream
    )
    chat = _Chat(
        id=completion_id,
        model=model,
        fingerprint=ctx.ids.fingerprint(model),
        tier=openai_service_tier(body),
        out=out,
        tool=tool,
        finish="length" if out.truncated else ("tool_calls" if tool else "stop"),
        usage=_chat_usage(prompt, completion, n * out.reasoning),
        call_ids=[ctx.ids.call() for _ in range(n)],
    )
    if not stream:
        return Reply(200, headers, body=_chat_body(ctx, chat), indent=2)
    return finish_openai_stream(ctx, headers, _chat_events(ctx, chat))


def _chat_body(ctx: Ctx, chat: _Chat) -> JSONDict:
    choices = []
    for i, call_id in enumerate(chat.call_ids):
        message: JSONDict = {"role": "assistant", "content": None if chat.tool else chat.out.text}
        message["refusal"] = None
        message["annotations"] = []
        if chat.tool:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": chat.tool.name, "arguments": "".join(chat.out.pieces)},
                }
            ]
        choices.append(_choice(ctx, {"index": i, "message": message}, chat.finish))
    result: JSONDict = {
        "id": chat.id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": chat.model,
        "choices": choices,
        "usage": chat.usage,
        "service_tier": chat.tier,
        "system_fingerprint": chat.fingerprint,
    }
    if ctx.azure:
        result["prompt_filter_results"] = _prompt_filter_results(1)
    return result


def _choice(ctx: Ctx, fields: JSONDict, finish: str) -> JSONDict:
    """A choice of a JSON answer (chat or legacy completions), Azure's filter results added."""
    choice: JSONDict = {**fields, "logprobs": None, "finish_reason": finish}
    if ctx.azure:
        choice["content_filter_results"] = azure_filter_results()
    return choice


def _prompt_filter_results(prompts: int) -> list[JSONDict]:
    return [
        {"prompt_index": i, "content_filter_results": azure_filter_results()}
        for i in range(prompts)
    ]


def _chat_events(ctx: Ctx, chat: _Chat) -> list[tuple[str | None, str]]:
    stream_options = dict_field(ctx.body, "stream_options")
    include_usage = _include_usage(ctx)
    obfuscate = stream_options.get("include_obfuscation", True) is not False and not ctx.azure
    events: list[tuple[str | None, str]] = []

    def chunk(choices: list[JSONDict], *, final_usage: JSONDict | None = None) -> None:
        data: JSONDict = {
            "id": chat.id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": chat.model,
            "service_tier": chat.tier,
            "system_fingerprint": chat.fingerprint,
            "choices": choices,
        }
        if include_usage:
            data["usage"] = final_usage
        if obfuscate:
            data["obfuscation"] = obfuscation(ctx.ids, len(events))
        events.append((None, dumps(data)))

    if ctx.azure:  # Azure's first chunk: no choices, the prompt's filter results
        first_chunk = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
        events.append(
            (None, dumps({**first_chunk, "prompt_filter_results": _prompt_filter_results(1)}))
        )
    for i, call_id in enumerate(chat.call_ids):
        for delta, finish, filters in _chat_deltas(ctx, chat, call_id):
            extra: JSONDict = {"content_filter_results": filters} if ctx.azure else {}
            chunk(
                [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish, **extra}]
            )
    if include_usage:
        chunk([], final_usage=chat.usage)
    return events


def _chat_deltas(
    ctx: Ctx, chat: _Chat, call_id: str
) -> Iterator[tuple[JSONDict, str | None, JSONDict]]:
    """One choice's stream: each delta, its finish reason and its (Azure) filter results."""
    tool = chat.tool
    first: JSONDict = {"role": "assistant", "content": None if tool else "", "refusal": None}
    if tool:
        first["tool_calls"] = [
            {
                "index": 0,
                "id": call_id,
                "type": "function",
                "function": {"name": tool.name, "arguments": ""},
            }
        ]
    yield first, None, {}
    for piece in chat.out.pieces:
        delta: JSONDict = (
            {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            if tool
            else {"content": piece}
        )
        yield delta, None, azure_filter_results() if ctx.azure else {}
    yield {}, chat.finish, {}


def _include_usage(ctx: Ctx) -> bool:
    """The stream ends with a usage chunk: asked for, and not refused by the scenario."""
    asked = dict_field(ctx.body, "stream_options").get("include_usage")
    return bool(asked) and not ctx.controls.has("no_stream_usage")


def openai_completions(ctx: Ctx) -> Reply:
    body = ctx.body
    model = ctx.model("gpt-3.5-turbo-instruct:20230824-v2")
    prompts = text_inputs(body.get("prompt"))
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    n = max(1, min(int(n or 1), 8))
    estimate = sum(text_input_tokens(p) for p in prompts)
    prompt = openai_prompt_usage(estimate, ctx.controls)
    limit = int_field(body, "max_tokens")
    out = plan_output(0, ctx.controls.reply_pieces(), 16 if limit is None else limit)
    finish = "length" if out.truncated else "stop"
    echo = bool(body.get("echo"))
    # One choice per prompt and n; with echo, its text starts with its prompt.
    prefixes = [p if echo and isinstance(p, str) else "" for p in prompts for _ in range(n)]
    completion = len(prefixes) * len(out.pieces)
    usage: JSONDict = {
        "prompt_tokens": prompt.total,
        "completion_tokens": completion,
        "total_tokens": prompt.total + completion,
    }
    if prompt.cached:
        usage["prompt_tokens_details"] = {"cached_tokens": prompt.cached, "audio_tokens": 0}
    completion_id = ctx.ids.cmpl()
    stream = bool(body.get("stream"))
    headers = openai_headers(
        ctx, prompt_tokens=prompt.total, output_tokens=completion, stream=stream
    )
    head: JSONDict = {"id": completion_id, "object": "text_completion", "created": ctx.created}
    if not stream:
        choices = [
            _choice(ctx, {"text": prefix + out.text, "index": i}, finish)
            for i, prefix in enumerate(prefixes)
        ]
        result: JSONDict = {**head, "model": model, "choices": choices, "usage": usage}
        if ctx.azure:
            result["prompt_filter_results"] = _prompt_filter_results(len(prompts))
        return Reply(200, headers, body=result, indent=2)

    include_usage = _include_usage(ctx)
    events: list[tuple[str | None, str]] = []

    def chunk(choices: list[JSONDict], final_usage: JSONDict | None = None) -> None:
        data: JSONDict = {**head, "choices": choices, "model": model}
        if include_usage:
            data["usage"] = final_usage
        events.append((None, dumps(data)))

    for i, prefix in enumerate(prefixes):
        for text in ([prefix] if prefix else []) + out.pieces:
            chunk([{"text": text, "index": i, "logprobs": None, "finish_reason": None}])
        chunk([{"text": "", "index": i, "logprobs": None, "finish_reason": finish}])
    if include_usage:
        chunk([], usage)
    return finish_openai_stream(ctx, headers, events)


def _embedding_vector(item: Any, dims: int) -> list[float]:
    seed = hashlib.sha256(json.dumps(item, sort_keys=True).encode()).digest()
    rng = random.Random(int.from_bytes(seed[:8], "big"))
    values = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 8) for v in values]


def openai_embeddings(ctx: Ctx) -> Reply:
    body = ctx.body
    requested = (
        body.get("model") if isinstance(body.get("model"), str) else "text-embedding-3-small"
    )
    model = ctx.model(str(requested))
    inputs = text_inputs(body.get("input"))
    dims = body.get("dimensions")
    if not isinstance(dims, int) or dims <= 0:
        dims = 3072 if "3-large" in model else 1536
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for i, item in enumerate(inputs):
        vector = _embedding_vector(item, dims)
        embedding: Any = (
            base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if as_base64 else vector
        )
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    prompt_tokens = sum(text_input_tokens(i) for i in inputs)
    headers = openai_headers(ctx, prompt_tokens=prompt_tokens, output_tokens=0, stream=False)
    result = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return Reply(200, headers, body=result, indent=2)
