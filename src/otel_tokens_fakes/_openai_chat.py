"""OpenAI chat completions, legacy completions and embeddings (JSON and SSE)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
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
    openai_function_tool,
    openai_headers,
    openai_prompt_usage,
    openai_reasoning,
    openai_service_tier,
)
from ._reply import (
    Ctx,
    JSONDict,
    Reply,
    dict_field,
    dumps,
    int_field,
    plan_output,
)


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


def openai_chat(ctx: Ctx) -> Reply:
    body = ctx.body
    model = ctx.model("gpt-4o-mini-2024-07-18")
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    n = max(1, min(int(n or 1), 8))
    prompt = openai_prompt_usage(_chat_prompt_tokens(body), ctx.controls)
    reasoning = openai_reasoning(ctx, model, body.get("reasoning_effort"))
    tool = (
        openai_function_tool(body.get("tools"), False) if ctx.controls.has("tool_call") else None
    )
    if body.get("tool_choice") == "none":
        tool = None
    pieces = tool.pieces if tool else ctx.controls.reply_pieces()
    out = plan_output(reasoning, pieces, int_field(body, "max_completion_tokens", "max_tokens"))
    completion = n * (out.reasoning + len(out.pieces))
    usage = _chat_usage(prompt, completion, n * out.reasoning)
    finish = "length" if out.truncated else ("tool_calls" if tool else "stop")
    completion_id = ctx.ids.chatcmpl()
    fingerprint = ctx.ids.fingerprint(model)
    tier = openai_service_tier(body)
    stream = bool(body.get("stream"))
    headers = openai_headers(
        ctx, prompt_tokens=prompt.total, output_tokens=completion, stream=stream
    )
    call_ids = [ctx.ids.call() for _ in range(n)]

    if not stream:
        choices = []
        for i in range(n):
            message: JSONDict = {"role": "assistant", "content": None if tool else out.text}
            message["refusal"] = None
            message["annotations"] = []
            if tool:
                message["tool_calls"] = [
                    {
                        "id": call_ids[i],
                        "type": "function",
                        "function": {"name": tool.name, "arguments": "".join(out.pieces)},
                    }
                ]
            choice: JSONDict = {
                "index": i,
                "message": message,
                "logprobs": None,
                "finish_reason": finish,
            }
            if ctx.azure:
                choice["content_filter_results"] = azure_filter_results()
            choices.append(choice)
        result: JSONDict = {
            "id": completion_id,
            "object": "chat.completion",
            "created": ctx.created,
            "model": model,
            "choices": choices,
            "usage": usage,
            "service_tier": tier,
            "system_fingerprint": fingerprint,
        }
        if ctx.azure:
            result["prompt_filter_results"] = [
                {"prompt_index": 0, "content_filter_results": azure_filter_results()}
            ]
        return Reply(200, headers, body=result, indent=2)

    stream_options = dict_field(body, "stream_options")
    include_usage = bool(stream_options.get("include_usage")) and not ctx.controls.has(
        "no_stream_usage"
    )
    obfuscate = stream_options.get("include_obfuscation", True) is not False and not ctx.azure
    events: list[tuple[str | None, str]] = []

    def chunk(choices: list[JSONDict], *, final_usage: JSONDict | None = None) -> None:
        data: JSONDict = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": model,
            "service_tier": tier,
            "system_fingerprint": fingerprint,
            "choices": choices,
        }
        if include_usage:
            data["usage"] = final_usage
        if obfuscate:
            data["obfuscation"] = obfuscation(ctx.ids, len(events))
        events.append((None, dumps(data)))

    if ctx.azure:
        events.append(
            (
                None,
                dumps(
                    {
                        "choices": [],
                        "created": 0,
                        "id": "",
                        "model": "",
                        "object": "",
                        "prompt_filter_results": [
                            {"prompt_index": 0, "content_filter_results": azure_filter_results()}
                        ],
                    }
                ),
            )
        )

    for i in range(n):
        first: JSONDict = {"role": "assistant", "content": None if tool else "", "refusal": None}
        if tool:
            first["tool_calls"] = [
                {
                    "index": 0,
                    "id": call_ids[i],
                    "type": "function",
                    "function": {"name": tool.name, "arguments": ""},
                }
            ]
        extra: JSONDict = {"content_filter_results": {}} if ctx.azure else {}
        chunk([{"index": i, "delta": first, "logprobs": None, "finish_reason": None, **extra}])
        for piece in out.pieces:
            delta: JSONDict = (
                {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                if tool
                else {"content": piece}
            )
            if ctx.azure:
                extra = {"content_filter_results": azure_filter_results()}
            chunk([{"index": i, "delta": delta, "logprobs": None, "finish_reason": None, **extra}])
        extra = {"content_filter_results": {}} if ctx.azure else {}
        chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": finish, **extra}])
    if include_usage:
        chunk([], final_usage=usage)
    return finish_openai_stream(ctx, headers, events)


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
    n_choices = n * len(prompts)
    completion = n_choices * len(out.pieces)
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

    def prefix(index: int) -> str:
        p = prompts[index // n]
        return p if echo and isinstance(p, str) else ""

    if not stream:
        choices = []
        for idx in range(n_choices):
            choice: JSONDict = {
                "text": prefix(idx) + out.text,
                "index": idx,
                "logprobs": None,
                "finish_reason": finish,
            }
            if ctx.azure:
                choice["content_filter_results"] = azure_filter_results()
            choices.append(choice)
        result: JSONDict = {
            "id": completion_id,
            "object": "text_completion",
            "created": ctx.created,
            "model": model,
            "choices": choices,
            "usage": usage,
        }
        if ctx.azure:
            result["prompt_filter_results"] = [
                {"prompt_index": i, "content_filter_results": azure_filter_results()}
                for i in range(len(prompts))
            ]
        return Reply(200, headers, body=result, indent=2)

    stream_options = dict_field(body, "stream_options")
    include_usage = bool(stream_options.get("include_usage")) and not ctx.controls.has(
        "no_stream_usage"
    )
    events: list[tuple[str | None, str]] = []

    def chunk(choices: list[JSONDict], final_usage: JSONDict | None = None) -> None:
        data: JSONDict = {
            "id": completion_id,
            "object": "text_completion",
            "created": ctx.created,
            "choices": choices,
            "model": model,
        }
        if include_usage:
            data["usage"] = final_usage
        events.append((None, dumps(data)))

    for idx in range(n_choices):
        texts = ([prefix(idx)] if prefix(idx) else []) + out.pieces
        for text in texts:
            chunk([{"text": text, "index": idx, "logprobs": None, "finish_reason": None}])
        chunk([{"text": "", "index": idx, "logprobs": None, "finish_reason": finish}])
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
