"""The OpenAI Responses API (JSON and typed SSE events)."""

from __future__ import annotations

from dataclasses import dataclass

from ._estimate import (
    OPENAI_IMAGE_TOKENS,
    content_tokens,
    estimate_tokens,
    part_tokens,
    tools_tokens,
)
from ._models import is_openai_reasoning_model
from ._openai import (
    PromptUsage,
    obfuscation,
    openai_answer,
    openai_headers,
    openai_prompt_usage,
    openai_service_tier,
)
from ._output import Output, ToolCall
from ._reply import Ctx, JSONDict, Reply, cut_point, dict_field, dumps, int_field


def _responses_prompt_tokens(body: JSONDict) -> int:
    total = 3
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        total += estimate_tokens(instructions)
    items = body.get("input")
    if isinstance(items, str):
        total += 4 + estimate_tokens(items)
    elif isinstance(items, list):
        for item in items:
            total += 4
            if isinstance(item, dict) and "content" in item:
                total += content_tokens(item["content"], OPENAI_IMAGE_TOKENS)
            elif isinstance(item, dict) and "output" in item:
                output = item["output"]
                total += content_tokens(output, OPENAI_IMAGE_TOKENS)
            elif isinstance(item, dict) and "arguments" in item:
                total += estimate_tokens(str(item.get("name", "")) + str(item["arguments"]))
            else:
                total += part_tokens(item, OPENAI_IMAGE_TOKENS)
    return total + tools_tokens(body.get("tools"))


def openai_responses_input_tokens(ctx: Ctx) -> Reply:
    """``POST /v1/responses/input_tokens``: the input tokens the same body would be billed
    as prompt tokens by ``/v1/responses`` (the fake's own estimate), without a response."""
    tokens = _responses_prompt_tokens(ctx.body)
    headers = openai_headers(ctx, prompt_tokens=tokens, output_tokens=0, stream=False)
    return Reply(200, headers, body={"object": "response.input_tokens", "input_tokens": tokens})


def _responses_usage(prompt: PromptUsage, output: int, reasoning: int) -> JSONDict:
    details: JSONDict = {"cached_tokens": prompt.cached, "cache_write_tokens": prompt.written}
    if prompt.written:
        details["cache_write_tokens_details"] = {
            "ttl_30m_tokens": prompt.written - prompt.written_long,
            "ttl_12h_tokens": prompt.written_long,
        }
    return {
        "input_tokens": prompt.total,
        "input_tokens_details": details,
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt.total + output,
    }


@dataclass(frozen=True)
class _Response:
    """One response, planned: what its JSON body and its stream both say."""

    id: str
    model: str
    usage: JSONDict
    out: Output
    reasoning_item: JSONDict | None
    search_items: list[JSONDict]
    final_item: JSONDict
    """The function call or the message."""

    @property
    def status(self) -> str:
        return "incomplete" if self.out.truncated else "completed"

    @property
    def output(self) -> list[JSONDict]:
        reasoning = [self.reasoning_item] if self.reasoning_item else []
        return [*reasoning, *self.search_items, self.final_item]


def openai_responses(ctx: Ctx) -> Reply:
    body = ctx.body
    model = ctx.model("gpt-4o-mini-2024-07-18")
    prompt = openai_prompt_usage(_responses_prompt_tokens(body), ctx.controls)
    effort = dict_field(body, "reasoning").get("effort")
    limit = int_field(body, "max_output_tokens")
    tool, out = openai_answer(ctx, model, effort, limit, responses_api=True)
    output_tokens = out.reasoning + len(out.pieces)
    response_id = ctx.ids.openai_item("resp")
    stream = bool(body.get("stream"))
    headers = openai_headers(
        ctx, prompt_tokens=prompt.total, output_tokens=output_tokens, stream=stream
    )
    reasoning_item: JSONDict | None = None
    if out.reasoning or is_openai_reasoning_model(model):
        reasoning_item = {"id": ctx.ids.openai_item("rs"), "type": "reasoning", "summary": []}
    searches = ctx.controls.web_search_requests if ctx.controls.has("web_search") else 0
    response = _Response(
        id=response_id,
        model=model,
        usage=_responses_usage(prompt, output_tokens, out.reasoning),
        out=out,
        reasoning_item=reasoning_item,
        search_items=[_search_item(ctx, k) for k in range(searches)],
        final_item=_final_item(ctx, out, tool),
    )
    if not stream:
        result = _response_object(ctx, response, response.status, response.output, True)
        return Reply(200, headers, body=result, indent=2)
    return Reply(200, headers, events=_response_events(ctx, response))


def _search_item(ctx: Ctx, k: int) -> JSONDict:
    return {
        "id": ctx.ids.openai_item("ws"),
        "type": "web_search_call",
        "status": "completed",
        "action": {"type": "search", "query": f"otel-tokens demo search {k + 1}"},
    }


def _final_item(ctx: Ctx, out: Output, tool: ToolCall | None) -> JSONDict:
    status = "incomplete" if out.truncated else "completed"
    if tool:
        return {
            "id": ctx.ids.openai_item("fc"),
            "type": "function_call",
            "status": status,
            "arguments": "".join(out.pieces),
            "call_id": ctx.ids.call(),
            "name": tool.name,
        }
    return {
        "id": ctx.ids.openai_item("msg"),
        "type": "message",
        "status": status,
        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": out.text}],
        "role": "assistant",
    }


def _response_object(
    ctx: Ctx, response: _Response, state: str, items: list[JSONDict], with_usage: bool
) -> JSONDict:
    """The response object in ``state``, as the JSON body and the stream's events carry it."""
    body = ctx.body
    reasoning_cfg = dict_field(body, "reasoning")
    return {
        "id": response.id,
        "object": "response",
        "created_at": ctx.created,
        "status": state,
        "background": bool(body.get("background", False)),
        "completed_at": ctx.created + 1 if state == "completed" else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if state == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": response.model,
        "output": items,
        "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {
            "effort": reasoning_cfg.get("effort", "medium" if response.reasoning_item else None),
            "summary": reasoning_cfg.get("summary"),
        },
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": openai_service_tier(body) if state != "in_progress" else "auto",
        "store": bool(body.get("store", True)),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **dict_field(body, "text")},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": response.usage if with_usage else None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


class _Events:
    """Typed SSE events, numbered in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str | None, str]] = []

    def emit(self, etype: str, payload: JSONDict) -> None:
        data = {"type": etype, "sequence_number": len(self.events), **payload}
        self.events.append((etype, dumps(data)))


def _response_events(ctx: Ctx, response: _Response) -> list[tuple[str | None, str]]:
    stream = _Events()
    in_progress = _response_object(ctx, response, "in_progress", [], False)
    stream.emit("response.created", {"response": in_progress})
    stream.emit("response.in_progress", {"response": in_progress})
    index = 0
    if response.reasoning_item:
        item = response.reasoning_item
        stream.emit("response.output_item.added", {"output_index": index, "item": item})
        stream.emit("response.output_item.done", {"output_index": index, "item": item})
        index += 1
    for item in response.search_items:
        added = {**item, "status": "in_progress", "action": {"type": "search"}}
        stream.emit("response.output_item.added", {"output_index": index, "item": added})
        for phase in ("in_progress", "searching", "completed"):
            where = {"output_index": index, "item_id": item["id"]}
            stream.emit(f"response.web_search_call.{phase}", where)
        stream.emit("response.output_item.done", {"output_index": index, "item": item})
        index += 1
    if response.final_item["type"] == "function_call":
        _function_call_events(stream, response, index)
    else:
        _message_events(ctx, stream, response, index)
    stream.emit("response.output_item.done", {"output_index": index, "item": response.final_item})
    events = stream.events
    if ctx.controls.has("stream_error"):
        cut = cut_point(ctx.controls, len(events))
        failed = _response_object(ctx, response, "failed", [], False)
        failed["error"] = {
            "code": "server_error",
            "message": "An error occurred while processing your request.",
        }
        events = events[:cut]
        data = {"type": "response.failed", "sequence_number": len(events), "response": failed}
        return [*events, ("response.failed", dumps(data))]
    final_type = "response.incomplete" if response.out.truncated else "response.completed"
    completed = _response_object(ctx, response, response.status, response.output, True)
    stream.emit(final_type, {"response": completed})
    return stream.events


def _function_call_events(stream: _Events, response: _Response, index: int) -> None:
    item = response.final_item
    added = {**item, "status": "in_progress", "arguments": ""}
    stream.emit("response.output_item.added", {"output_index": index, "item": added})
    for piece in response.out.pieces:
        stream.emit(
            "response.function_call_arguments.delta",
            {"item_id": item["id"], "output_index": index, "delta": piece},
        )
    stream.emit(
        "response.function_call_arguments.done",
        {"item_id": item["id"], "output_index": index, "arguments": item["arguments"]},
    )


def _message_events(ctx: Ctx, stream: _Events, response: _Response, index: int) -> None:
    item = response.final_item
    obfuscate = (
        dict_field(ctx.body, "stream_options").get("include_obfuscation", True) is not False
        and not ctx.azure
    )
    added = {**item, "status": "in_progress", "content": []}
    stream.emit("response.output_item.added", {"output_index": index, "item": added})
    where: JSONDict = {"item_id": item["id"], "output_index": index, "content_index": 0}
    empty_part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    stream.emit("response.content_part.added", {**where, "part": empty_part})
    for piece in response.out.pieces:
        payload: JSONDict = {**where, "delta": piece, "logprobs": []}
        if obfuscate:
            payload["obfuscation"] = obfuscation(ctx.ids, len(stream.events))
        stream.emit("response.output_text.delta", payload)
    text = response.out.text
    stream.emit("response.output_text.done", {**where, "text": text, "logprobs": []})
    stream.emit("response.content_part.done", {**where, "part": item["content"][0]})
