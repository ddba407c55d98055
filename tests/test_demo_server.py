"""The demo provider server, driven by the real ``openai`` and ``anthropic`` clients."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import warnings
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from otel_tokens_fakes import (
    DEFAULT_REPLY,
    ProviderServer,
    estimate_tokens,
    main,
    served_model,
)

REPLY_WORDS = len(DEFAULT_REPLY.split())
MESSAGES: list[Any] = [{"role": "user", "content": "Hello there, how are you today?"}]
CHAT_PROMPT = 3 + 4 + estimate_tokens("Hello there, how are you today?")
ANTHROPIC_PROMPT = 7 + 3 + estimate_tokens("Hello there, how are you today?")
HAIKU = "claude-haiku-4-5"


def scenario(name: str, **extra: str) -> dict[str, str]:
    return {"x-test-scenario": name, **extra}


@pytest.fixture(scope="module", autouse=True)
def _no_anthropic_sdk_spans() -> Iterator[None]:
    # anthropic 2.x traces its own calls (and propagates traceparent) when a global tracer
    # provider exists; keep these tests independent of whatever provider other tests install.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")
        yield


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


@pytest.fixture
def srv(server: ProviderServer) -> ProviderServer:
    server.clear()
    return server


@pytest.fixture(scope="module")
def _oai(server: ProviderServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="test", base_url=server.openai_base_url, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def _claude(server: ProviderServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        api_key="test", base_url=server.anthropic_base_url, max_retries=0
    ) as client:
        yield client


@pytest.fixture
def oai(srv: ProviderServer, _oai: openai.OpenAI) -> openai.OpenAI:
    return _oai


@pytest.fixture
def claude(srv: ProviderServer, _claude: anthropic.Anthropic) -> anthropic.Anthropic:
    return _claude


# --- server basics ------------------------------------------------------------------------------


def test_addresses_health_and_recording(srv: ProviderServer) -> None:
    assert srv.url.startswith("http://127.0.0.1:")
    assert srv.openai_base_url == srv.url + "/v1"
    assert srv.anthropic_base_url == srv.url
    with urllib.request.urlopen(srv.url + "/health", timeout=5) as resp:
        assert json.loads(resp.read()) == {"status": "ok"}
    request = srv.last_request
    assert (request.method, request.path, request.endpoint) == ("GET", "/health", "health")
    srv.clear()
    assert srv.requests == []


def test_start_stop_releases_port() -> None:
    server = ProviderServer().start()
    url = server.url
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/health", timeout=1)


def test_served_model_snapshots() -> None:
    assert served_model("gpt-4o-mini") == "gpt-4o-mini-2024-07-18"
    assert served_model("gpt-4o-mini-2024-07-18") == "gpt-4o-mini-2024-07-18"
    assert served_model("claude-sonnet-4-5", "anthropic") == "claude-sonnet-4-5-20250929"
    assert served_model("my-finetune") == "my-finetune"


def test_unknown_scenario_server_default_is_rejected() -> None:
    with pytest.raises(ValueError, match="nope"):
        ProviderServer(scenario="nope")


def test_main_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--port" in capsys.readouterr().out


# --- OpenAI chat completions ----------------------------------------------------------------------


def test_chat_json(srv: ProviderServer, oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.service_tier == "default"
    assert completion.system_fingerprint and completion.system_fingerprint.startswith("fp_")
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (CHAT_PROMPT, REPLY_WORDS)
    assert usage.total_tokens == CHAT_PROMPT + REPLY_WORDS
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details
    assert usage.completion_tokens_details.reasoning_tokens == 0
    assert completion._request_id and completion._request_id.startswith("req_")
    request = srv.last_request
    assert (request.path, request.provider, request.endpoint) == (
        "/v1/chat/completions",
        "openai",
        "chat.completions",
    )
    assert request.body["messages"] == MESSAGES
    assert request.headers["authorization"] == "Bearer test"


def test_chat_stream_without_include_usage_has_no_usage(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(deltas) == DEFAULT_REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.obfuscation for c in chunks)


def test_chat_stream_include_usage_final_chunk(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert last.usage.completion_tokens == len(deltas) == REPLY_WORDS
    assert last.usage.prompt_tokens == CHAT_PROMPT
    assert {c.id for c in chunks} == {last.id}
    assert {c.model for c in chunks} == {"gpt-4o-mini-2024-07-18"}


def test_chat_stream_helper(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream_options={"include_usage": True},
    ) as stream:
        text = "".join(e.delta for e in stream if e.type == "content.delta")
        final = stream.get_final_completion()
    assert text == DEFAULT_REPLY
    assert final.usage is not None and final.usage.completion_tokens == REPLY_WORDS
    assert final.choices[0].message.content == DEFAULT_REPLY


@pytest.mark.parametrize(
    ("model", "effort", "reasoning"),
    [("o3", None, 64), ("gpt-5-mini", "high", 192), ("gpt-5", "minimal", 0)],
)
def test_chat_reasoning_models(
    oai: openai.OpenAI, model: str, effort: str | None, reasoning: int
) -> None:
    kwargs: dict[str, Any] = {"reasoning_effort": effort} if effort else {}
    completion = oai.chat.completions.create(model=model, messages=MESSAGES, **kwargs)
    usage = completion.usage
    assert usage and usage.completion_tokens_details
    assert usage.completion_tokens_details.reasoning_tokens == reasoning
    assert usage.completion_tokens == reasoning + REPLY_WORDS
    assert completion.model == served_model(model)


def test_chat_controls_and_truncation(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_completion_tokens=5,
        extra_headers={"x-test-reasoning-tokens": "2", "x-test-output-tokens": "40"},
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage and completion.usage.completion_tokens == 5
    assert completion.usage.completion_tokens_details
    assert completion.usage.completion_tokens_details.reasoning_tokens == 2
    assert completion.choices[0].message.content == "Hello! This is"


def test_chat_cache_scenario(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers=scenario("cache")
    )
    assert completion.usage and completion.usage.prompt_tokens_details
    assert completion.usage.prompt_tokens_details.cached_tokens == CHAT_PROMPT // 2
    completion = oai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"x-test-cached-tokens": "2048"}
    )
    assert completion.usage and completion.usage.prompt_tokens_details
    assert completion.usage.prompt_tokens_details.cached_tokens == 2048
    assert completion.usage.prompt_tokens == 2048


def test_chat_scenario_from_metadata(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, metadata={"test_scenario": "rate_limit"}
        )


def test_chat_with_raw_response(oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["content-type"] == "application/json"
    assert raw.headers["x-request-id"].startswith("req_")
    assert int(raw.headers["openai-processing-ms"]) > 0
    assert raw.headers["x-ratelimit-limit-requests"] == "10000"
    completion = raw.parse()
    assert completion.usage and completion.usage.total_tokens == CHAT_PROMPT + REPLY_WORDS


def test_chat_tool_call_stream(oai: openai.OpenAI) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["city", "days"],
                },
            },
        }
    ]
    with oai.chat.completions.stream(
        model="gpt-4o-mini",
        messages=MESSAGES,
        tools=tools,
        stream_options={"include_usage": True},
        extra_headers=scenario("tool_call"),
    ) as stream:
        arg_deltas = [
            e.arguments_delta
            for e in stream
            if e.type == "tool_calls.function.arguments.delta" and e.arguments_delta
        ]
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "example", "days": 1}
    assert final.usage and final.usage.completion_tokens == len(arg_deltas)


def test_chat_n_choices(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.usage and completion.usage.completion_tokens == 2 * REPLY_WORDS


# --- OpenAI Responses, embeddings, legacy completions ------------------------------------------


def test_responses_json(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="gpt-5", input="Write one sentence.")
    assert response.id.startswith("resp_")
    assert response.model == "gpt-5-2025-08-07"
    assert response.status == "completed"
    assert response.output_text == DEFAULT_REPLY
    assert [item.type for item in response.output] == ["reasoning", "message"]
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens == 3 + 4 + estimate_tokens("Write one sentence.")
    assert usage.output_tokens_details.reasoning_tokens == 64
    assert usage.output_tokens == 64 + REPLY_WORDS
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_responses_raw_stream_events(oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model="gpt-4o-mini", input="Hi", stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == DEFAULT_REPLY
    created, completed = events[0], events[-1]
    assert created.type == "response.created" and created.response.usage is None
    assert completed.type == "response.completed" and completed.response.usage
    assert completed.response.usage.output_tokens == len(deltas)


def test_responses_stream_helper_with_cache(oai: openai.OpenAI) -> None:
    with oai.responses.stream(
        model="gpt-4.1",
        input="Hi",
        extra_headers={
            "x-test-cached-tokens": "1024",
            "x-test-cache-write-tokens": "300",
            "x-test-cache-write-12h": "100",
        },
    ) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == DEFAULT_REPLY == final.output_text
    usage = final.usage
    assert usage is not None
    assert usage.input_tokens == 1324
    assert usage.input_tokens_details.cached_tokens == 1024
    assert usage.input_tokens_details.cache_write_tokens == 300
    details = usage.input_tokens_details.cache_write_tokens_details
    assert details and (details.ttl_30m_tokens, details.ttl_12h_tokens) == (200, 100)
    assert final.model == "gpt-4.1-2025-04-14"


def test_responses_truncated_and_function_call(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="gpt-4o-mini", input="Hi", max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage and response.usage.output_tokens == 3
    tools: Any = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    response = oai.responses.create(
        model="gpt-4o-mini", input="Hi", tools=tools, extra_headers=scenario("tool_call")
    )
    call = response.output[-1]
    assert call.type == "function_call" and call.name == "lookup"


def test_responses_web_search_stream(oai: openai.OpenAI) -> None:
    events = list(
        oai.responses.create(
            model="gpt-4o", input="news?", stream=True, extra_headers=scenario("web_search")
        )
    )
    final = events[-1]
    assert final.type == "response.completed"
    assert [i.type for i in final.response.output] == [
        "web_search_call",
        "web_search_call",
        "message",
    ]
    assert sum(e.type == "response.web_search_call.completed" for e in events) == 2


def test_embeddings(srv: ProviderServer, oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(model="text-embedding-3-small", input=["hello", "world!!"])
    assert result.model == "text-embedding-3-small"
    assert [len(d.embedding) for d in result.data] == [1536, 1536]
    assert result.usage.prompt_tokens == result.usage.total_tokens == 2 + 2
    again = oai.embeddings.create(model="text-embedding-3-small", input=["hello"], dimensions=8)
    assert len(again.data[0].embedding) == 8
    ada = oai.embeddings.create(model="text-embedding-ada-002", input=[[1, 2, 3]])
    assert ada.model == "text-embedding-ada-002-v2"
    assert ada.usage.prompt_tokens == 3
    b64 = oai.embeddings.create(model="text-embedding-3-large", input="x", encoding_format="base64")
    assert isinstance(b64.data[0].embedding, str)
    assert srv.last_request.body["encoding_format"] == "base64"


def test_legacy_completions(oai: openai.OpenAI) -> None:
    completion = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert completion.model == "gpt-3.5-turbo-instruct:20230824-v2"
    assert completion.choices[0].text == DEFAULT_REPLY
    assert completion.usage and completion.usage.prompt_tokens == estimate_tokens("Say hi")
    chunks = list(
        oai.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Say hi",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert chunks[-1].choices == []
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens == len(texts) == REPLY_WORDS


# --- Azure OpenAI ---------------------------------------------------------------------------------


def test_azure_chat_json_and_stream(srv: ProviderServer) -> None:
    client = openai.AzureOpenAI(
        api_key="test", azure_endpoint=srv.url, api_version="2024-10-21", max_retries=0
    )
    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    request = srv.last_request
    assert request.path == "/openai/deployments/gpt-4o/chat/completions"
    assert request.query == {"api-version": "2024-10-21"}
    assert (request.provider, request.deployment) == ("azure", "gpt-4o")
    assert request.headers["api-key"] == "test"
    assert completion.model == "gpt-4o-2024-08-06"
    assert completion.model_extra and "prompt_filter_results" in completion.model_extra
    assert completion.usage and completion.usage.prompt_tokens == CHAT_PROMPT

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert "apim-request-id" in raw.headers
    chunks = list(raw.parse())
    assert chunks[0].choices == [] and chunks[0].model == ""
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens == REPLY_WORDS

    with client.chat.completions.stream(
        model="gpt-4o", messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == DEFAULT_REPLY
    assert final.usage and final.usage.total_tokens == CHAT_PROMPT + REPLY_WORDS


def test_azure_rate_limit_body(srv: ProviderServer) -> None:
    client = openai.AzureOpenAI(
        api_key="test", azure_endpoint=srv.url, api_version="2024-10-21", max_retries=0
    )
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers=scenario("rate_limit")
        )
    assert isinstance(exc.value.body, dict) and exc.value.body["code"] == "429"
    assert exc.value.response.headers["retry-after"] == "1"


# --- Async OpenAI ---------------------------------------------------------------------------------


def test_async_openai(srv: ProviderServer) -> None:
    async def run() -> tuple[int, str, int]:
        async with openai.AsyncOpenAI(
            api_key="test", base_url=srv.openai_base_url, max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            usage = 0
            async for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage.completion_tokens
            async with client.responses.stream(model="gpt-4o-mini", input="Hi") as rstream:
                final = await rstream.get_final_response()
            assert final.usage
            completion = await client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES
            )
            assert completion.usage
            return usage, final.output_text, completion.usage.total_tokens

    assert asyncio.run(run()) == (REPLY_WORDS, DEFAULT_REPLY, CHAT_PROMPT + REPLY_WORDS)


# --- Anthropic ------------------------------------------------------------------------------------


def test_anthropic_json(srv: ProviderServer, claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model=HAIKU, max_tokens=256, messages=MESSAGES)
    assert message.id.startswith("msg_01")
    assert message.model == "claude-haiku-4-5-20251001"
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text == DEFAULT_REPLY
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (ANTHROPIC_PROMPT, REPLY_WORDS)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (0, 0)
    assert usage.cache_creation is not None
    assert usage.service_tier == "standard"
    assert message._request_id and message._request_id.startswith("req_011C")
    request = srv.last_request
    assert (request.path, request.provider, request.endpoint) == (
        "/v1/messages",
        "anthropic",
        "messages",
    )
    assert "anthropic-version" in request.headers


def test_anthropic_snapshot_of_sonnet(claude: anthropic.Anthropic) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK flags claude-sonnet-4-5
        message = claude.messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES
        )
    assert message.model == "claude-sonnet-4-5-20250929"


def test_anthropic_raw_stream_events(claude: anthropic.Anthropic) -> None:
    events = list(
        claude.messages.create(model=HAIKU, max_tokens=256, messages=MESSAGES, stream=True)
    )
    types = [e.type for e in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-2:] == ["message_delta", "message_stop"]
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and delta.type == "message_delta"
    assert start.message.usage.output_tokens == 1
    assert start.message.usage.input_tokens == ANTHROPIC_PROMPT
    texts = [
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    ]
    assert "".join(texts) == DEFAULT_REPLY
    assert delta.usage.output_tokens == len(texts) == REPLY_WORDS
    assert delta.delta.stop_reason == "end_turn"


def test_anthropic_stream_helper_cache_split(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=HAIKU,
        max_tokens=256,
        messages=MESSAGES,
        extra_headers=scenario(
            "cache", **{"x-test-cache-write-tokens": "4000", "x-test-cache-write-1h": "1000"}
        ),
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == DEFAULT_REPLY
    usage = final.usage
    assert usage.cache_read_input_tokens == ANTHROPIC_PROMPT // 2
    assert usage.cache_creation_input_tokens == 4000
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 3000
    assert usage.cache_creation.ephemeral_1h_input_tokens == 1000
    assert usage.input_tokens == 1
    assert usage.output_tokens == REPLY_WORDS


def test_anthropic_web_search(claude: anthropic.Anthropic) -> None:
    events = list(
        claude.messages.create(
            model=HAIKU,
            max_tokens=256,
            messages=MESSAGES,
            stream=True,
            extra_headers=scenario("web_search"),
        )
    )
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and delta.type == "message_delta"
    assert start.message.usage.server_tool_use is None
    assert delta.usage.server_tool_use and delta.usage.server_tool_use.web_search_requests == 2
    assert delta.usage.input_tokens == start.message.usage.input_tokens + 2 * 750
    message = claude.messages.create(
        model=HAIKU, max_tokens=256, messages=MESSAGES, extra_headers=scenario("web_search")
    )
    assert [b.type for b in message.content] == [
        "server_tool_use",
        "web_search_tool_result",
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    assert message.usage.input_tokens == delta.usage.input_tokens
    assert message.usage.output_tokens == delta.usage.output_tokens


def test_anthropic_thinking_and_tool_use(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=HAIKU,
        max_tokens=2048,
        messages=MESSAGES,
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.usage.output_tokens_details
    assert final.usage.output_tokens_details.thinking_tokens == 48
    assert final.usage.output_tokens == 48 + REPLY_WORDS

    tools: Any = [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    message = claude.messages.create(
        model=HAIKU,
        max_tokens=256,
        messages=MESSAGES,
        tools=tools,
        extra_headers=scenario("tool_call"),
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.input == {"city": "example"}


def test_anthropic_count_tokens_and_beta(srv: ProviderServer, claude: anthropic.Anthropic) -> None:
    count = claude.messages.count_tokens(model=HAIKU, messages=MESSAGES)
    assert count.input_tokens == ANTHROPIC_PROMPT
    assert srv.last_request.endpoint == "messages.count_tokens"
    beta = claude.beta.messages.create(
        model=HAIKU, max_tokens=64, messages=MESSAGES, betas=["context-1m-2025-08-07"]
    )
    assert beta.usage.input_tokens == ANTHROPIC_PROMPT
    assert srv.last_request.headers["anthropic-beta"] == "context-1m-2025-08-07"


def test_anthropic_with_raw_response_headers(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(model=HAIKU, max_tokens=64, messages=MESSAGES)
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "4000"
    assert "anthropic-ratelimit-input-tokens-remaining" in raw.headers
    assert raw.parse().usage.output_tokens == REPLY_WORDS


def test_async_anthropic_stream(srv: ProviderServer) -> None:
    async def run() -> tuple[str, int]:
        client = anthropic.AsyncAnthropic(
            api_key="test", base_url=srv.anthropic_base_url, max_retries=0
        )
        async with client.messages.stream(model=HAIKU, max_tokens=128, messages=MESSAGES) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        await client.close()
        return text, final.usage.output_tokens

    assert asyncio.run(run()) == (DEFAULT_REPLY, REPLY_WORDS)


# --- errors and failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("rate_limit", openai.RateLimitError),
        ("server_error", openai.InternalServerError),
        ("internal_error", openai.InternalServerError),
        ("bad_request", openai.BadRequestError),
        ("auth_error", openai.AuthenticationError),
        ("nonsense", openai.BadRequestError),
    ],
)
def test_openai_errors(oai: openai.OpenAI, name: str, error: type[Exception]) -> None:
    with pytest.raises(error) as exc:
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers=scenario(name)
        )
    assert isinstance(exc.value, openai.APIStatusError)
    assert isinstance(exc.value.body, dict) and "message" in exc.value.body
    if name == "rate_limit":
        assert exc.value.body["code"] == "rate_limit_exceeded"
        assert exc.value.response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("name", "error", "status"),
    [
        ("rate_limit", anthropic.RateLimitError, 429),
        ("server_error", anthropic.InternalServerError, 529),
        ("internal_error", anthropic.InternalServerError, 500),
        ("bad_request", anthropic.BadRequestError, 400),
        ("auth_error", anthropic.AuthenticationError, 401),
    ],
)
def test_anthropic_errors(
    claude: anthropic.Anthropic, name: str, error: type[Exception], status: int
) -> None:
    with pytest.raises(error) as exc:
        claude.messages.create(
            model=HAIKU, max_tokens=64, messages=MESSAGES, extra_headers=scenario(name)
        )
    assert isinstance(exc.value, anthropic.APIStatusError)
    assert exc.value.status_code == status
    assert isinstance(exc.value.body, dict) and exc.value.body["type"] == "error"
    if name == "server_error":
        assert isinstance(exc.value, anthropic.OverloadedError)
        assert exc.value.body["error"]["type"] == "overloaded_error"
    if name == "rate_limit":
        assert exc.value.response.headers["retry-after"] == "1"


def test_retry_once_scenarios_succeed_on_retry(srv: ProviderServer) -> None:
    oai = openai.OpenAI(api_key="test", base_url=srv.openai_base_url, max_retries=2)
    completion = oai.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=scenario("rate_limit_once")
    )
    assert completion.usage and completion.usage.completion_tokens == REPLY_WORDS
    claude = anthropic.Anthropic(api_key="test", base_url=srv.anthropic_base_url, max_retries=2)
    message = claude.messages.create(
        model=HAIKU, max_tokens=64, messages=MESSAGES, extra_headers=scenario("server_error_once")
    )
    assert message.usage.output_tokens == REPLY_WORDS
    assert [r.headers["x-stainless-retry-count"] for r in srv.requests] == ["0", "1", "0", "1"]


def test_drop_mid_stream_openai(oai: openai.OpenAI) -> None:
    seen: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=scenario("drop_mid_stream"),
        ):
            seen.append(chunk)
    assert 0 < len(seen) < REPLY_WORDS
    assert all(c.usage is None for c in seen)
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers=scenario("drop_mid_stream")
        )


def test_drop_mid_stream_anthropic(claude: anthropic.Anthropic) -> None:
    # anthropic >= 2.17 wraps the transport error in APIConnectionError; earlier 2.x did not.
    with (
        pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)),
        claude.messages.stream(
            model=HAIKU,
            max_tokens=64,
            messages=MESSAGES,
            extra_headers=scenario("drop_mid_stream", **{"x-test-drop-after": "4"}),
        ) as stream,
    ):
        for _ in stream.text_stream:
            pass


def test_drop_mid_stream_async_openai(srv: ProviderServer) -> None:
    async def run() -> int:
        client = openai.AsyncOpenAI(api_key="test", base_url=srv.openai_base_url, max_retries=0)
        count = 0
        with pytest.raises(openai.APIConnectionError):
            async for _ in await client.responses.create(
                model="gpt-4o-mini",
                input="Hi",
                stream=True,
                extra_headers=scenario("drop_mid_stream"),
            ):
                count += 1
        await client.close()
        return count

    assert asyncio.run(run()) > 0


def test_stream_error_in_band(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    with pytest.raises(openai.APIError, match="server had an error"):
        list(
            oai.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                extra_headers=scenario("stream_error"),
            )
        )
    events = list(
        oai.responses.create(
            model="gpt-4o-mini", input="Hi", stream=True, extra_headers=scenario("stream_error")
        )
    )
    assert events[-1].type == "response.failed"
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        list(
            claude.messages.create(
                model=HAIKU,
                max_tokens=64,
                messages=MESSAGES,
                stream=True,
                extra_headers=scenario("stream_error"),
            )
        )


def test_slow_stream(oai: openai.OpenAI) -> None:
    started = time.monotonic()
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_headers=scenario("slow_stream", **{"x-test-stream-delay-ms": "10"}),
        )
    )
    assert time.monotonic() - started >= 0.01 * (len(chunks) - 1)


def test_anthropic_sdk_emits_its_own_span(
    srv: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = anthropic.Anthropic(
        api_key="test",
        base_url=srv.anthropic_base_url,
        max_retries=0,
        open_telemetry={"tracer_provider": provider},
    )
    client.messages.create(
        model=HAIKU, max_tokens=64, messages=MESSAGES, extra_headers=scenario("cache")
    )
    (span,) = exporter.get_finished_spans()
    assert span.name == "anthropic.messages.create"
    attributes = dict(span.attributes or {})
    # The SDK reports the semconv total (uncached + cache read + cache write) as input tokens.
    assert attributes["gen_ai.usage.input_tokens"] == ANTHROPIC_PROMPT
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == ANTHROPIC_PROMPT // 2
    assert "traceparent" in srv.last_request.headers
