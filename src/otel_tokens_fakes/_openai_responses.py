"""The OpenAI Responses API (JSON and typed SSE events)."""

from __future__ import annotations

from ._estimate import (
    OPENAI_IMAGE_TOKENS,
    content_tokens,
    estimate_tokens,
    part_tokens,
    tools_tokens,
)
from ._models import (
    is_openai_reasoning_model,
)
from ._openai import (
    PromptUsage,
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
    cut_point,
    dict_field,
    dumps,
    int_field,
    plan_output,
)


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


def openai_responses(ctx: Ctx) -> Reply:
    body = ctx.body
    model = ctx.model("gpt-4o-mini-2024-07-18")
    prompt = openai_prompt_usage(_responses_prompt_tokens(body), ctx.controls)
    reasoning_cfg = dict_field(body, "reasoning")
    reasoning = openai_reasoning(ctx, model, reasoning_cfg.get("effort"))
    tool = openai_function_tool(body.get("tools"), True) if ctx.controls.has("tool_call") else None
    if body.get("tool_choice") == "none":
        tool = None
    pieces = tool.pieces if tool else ctx.controls.reply_pieces()
    out = plan_output(reasoning, pieces, int_field(body, "max_output_tokens"))
    searches = ctx.controls.web_search_requests if ctx.controls.has("web_search") else 0
    output_tokens = out.reasoning + len(out.pieces)
    usage = _responses_usage(prompt, output_tokens, out.reasoning)
    response_id = ctx.ids.openai_item("resp")
    stream = bool(body.get("stream"))
    headers = openai_headers(
        ctx, prompt_tokens=prompt.total, output_tokens=output_tokens, stream=stream
    )
    status = "incomplete" if out.truncated else "completed"

    reasoning_item: JSONDict | None = None
    if out.reasoning or is_openai_reasoning_model(model):
        reasoning_item = {"id": ctx.ids.openai_item("rs"), "type": "reasoning", "summary": []}
    search_items: list[JSONDict] = []
    for k in range(searches):
        search_items.append(
            {
                "id": ctx.ids.openai_item("ws"),
                "type": "web_search_call",
                "status": "completed",
                "action": {"type": "search", "query": f"otel-tokens demo search {k + 1}"},
            }
        )
    final_item: JSONDict
    if tool:
        final_item = {
            "id": ctx.ids.openai_item("fc"),
            "type": "function_call",
            "status": status,
            "arguments": "".join(out.pieces),
            "call_id": ctx.ids.call(),
            "name": tool.name,
        }
    else:
        final_item = {
            "id": ctx.ids.openai_item("msg"),
            "type": "message",
            "status": status,
            "content": [
                {"type": "output_text", "annotations": [], "logprobs": [], "text": out.text}
            ],
            "role": "assistant",
        }
    output: list[JSONDict] = [
        *([reasoning_item] if reasoning_item else []),
        *search_items,
        final_item,
    ]

    def response_obj(state: str, items: list[JSONDict], with_usage: bool) -> JSONDict:
        text_cfg = dict_field(body, "text")
        obj: JSONDict = {
            "id": response_id,
            "object": "response",
            "created_at": ctx.created,
            "status": state,
            "background": bool(body.get("background", False)),
            "completed_at": ctx.created + 1 if state == "completed" else None,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if state == "incomplete"
            else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": model,
            "output": items,
            "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": {
                "effort": reasoning_cfg.get("effort", "medium" if reasoning_item else None),
                "summary": reasoning_cfg.get("summary"),
            },
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": openai_service_tier(body) if state != "in_progress" else "auto",
            "store": bool(body.get("store", True)),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium", **text_cfg},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": usage if with_usage else None,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }
        return obj

    if not stream:
        return Reply(200, headers, body=response_obj(status, output, True), indent=2)

    stream_options = dict_field(body, "stream_options")
    obfuscate = stream_options.get("include_obfuscation", True) is not False and not ctx.azure
    events: list[tuple[str | None, str]] = []

    def emit(etype: str, payload: JSONDict) -> None:
        data = {"type": etype, "sequence_number": len(events), **payload}
        events.append((etype, dumps(data)))

    emit("response.created", {"response": response_obj("in_progress", [], False)})
    emit("response.in_progress", {"response": response_obj("in_progress", [], False)})
    index = 0
    if reasoning_item:
        emit("response.output_item.added", {"output_index": index, "item": reasoning_item})
        emit("response.output_item.done", {"output_index": index, "item": reasoning_item})
        index += 1
    for item in search_items:
        added = {**item, "status": "in_progress", "action": {"type": "search"}}
        emit("response.output_item.added", {"output_index": index, "item": added})
        for phase in ("in_progress", "searching", "completed"):
            emit(
                f"response.web_search_call.{phase}", {"output_index": index, "item_id": item["id"]}
            )
        emit("response.output_item.done", {"output_index": index, "item": item})
        index += 1
    item_id = final_item["id"]
    if tool:
        emit(
            "response.output_item.added",
            {
                "output_index": index,
                "item": {**final_item, "status": "in_progress", "arguments": ""},
            },
        )
        for piece in out.pieces:
            emit(
                "response.function_call_arguments.delta",
                {"item_id": item_id, "output_index": index, "delta": piece},
            )
        emit(
            "response.function_call_arguments.done",
            {"item_id": item_id, "output_index": index, "arguments": final_item["arguments"]},
        )
    else:
        emit(
            "response.output_item.added",
            {"output_index": index, "item": {**final_item, "status": "in_progress", "content": []}},
        )
        empty_part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        emit(
            "response.content_part.added",
            {"item_id": item_id, "output_index": index, "content_index": 0, "part": empty_part},
        )
        for piece in out.pieces:
            payload: JSONDict = {
                "item_id": item_id,
                "output_index": index,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            }
            if obfuscate:
                payload["obfuscation"] = obfuscation(ctx.ids, len(events))
            emit("response.output_text.delta", payload)
        emit(
            "response.output_text.done",
            {
                "item_id": item_id,
                "output_index": index,
                "content_index": 0,
                "text": out.text,
                "logprobs": [],
            },
        )
        emit(
            "response.content_part.done",
            {
                "item_id": item_id,
                "output_index": index,
                "content_index": 0,
                "part": final_item["content"][0],
            },
        )
    emit("response.output_item.done", {"output_index": index, "item": final_item})
    if ctx.controls.has("stream_error"):
        cut = cut_point(ctx.controls, len(events))
        failed = response_obj("failed", [], False)
        failed["error"] = {
            "code": "server_error",
            "message": "An error occurred while processing your request.",
        }
        events = events[:cut]
        data = {"type": "response.failed", "sequence_number": len(events), "response": failed}
        events.append(("response.failed", dumps(data)))
        return Reply(200, headers, events=events)
    final_type = "response.incomplete" if out.truncated else "response.completed"
    emit(final_type, {"response": response_obj(status, output, True)})
    return Reply(200, headers, events=events)
