"""Pre-flight counting: a request's input tokens as the provider counts them, its context
window, the room left for output and the worst-case cost; fitting a conversation to a model.

Expected counts are OpenAI's own (the prompt_tokens its API reported for the cookbook's
examples, "How to count tokens with tiktoken") and OpenAI's published image arithmetic, not
values computed by the code under test.
"""

from __future__ import annotations

import base64
import struct
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import otel_tokens
from otel_tokens import counting
from otel_tokens.pricing import Catalog
from otel_tokens.window import (
    ContextWindowExceeded,
    MessageCountCache,
    fit_messages,
    limits_of,
    preflight,
    register_context_window,
)

CATALOG = Catalog()  # genai-prices only

# The cookbook's example conversation; OpenAI's API reported 129 prompt tokens for
# gpt-3.5-turbo and gpt-4, 124 for gpt-4o and gpt-4o-mini.
JARGON: list[dict[str, Any]] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]

# The cookbook's function-calling example: 101 prompt tokens (gpt-4o, gpt-4o-mini), 105
# (gpt-3.5-turbo, gpt-4).
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
WEATHER_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-4o", 124), ("gpt-4o-mini", 124), ("gpt-3.5-turbo", 129), ("gpt-4", 129)],
)
def test_chat_messages_count_as_openai_counts_them(model: str, expected: int) -> None:
    result = preflight(model, JARGON, catalog=CATALOG, cache=None)
    assert result.input_tokens == expected
    assert result.method == "exact"
    assert result.counted_by.startswith("tiktoken:")


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-4o", 101), ("gpt-4o-mini", 101), ("gpt-3.5-turbo", 105), ("gpt-4", 105)],
)
def test_tools_count_as_the_cookbook_does_and_are_marked_estimated(
    model: str, expected: int
) -> None:
    result = preflight(model, WEATHER_MESSAGES, tools=WEATHER_TOOLS, catalog=CATALOG)
    assert result.input_tokens == expected
    assert result.method == "estimated"  # OpenAI's formula approximates its serialisation


def _png(width: int, height: int) -> str:
    """A real PNG (one grey pixel row per line), as a data: URL."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _with_image(url: str, detail: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": url, "detail": detail}},
            ],
        }
    ]


def test_images_cost_openais_tile_formula() -> None:
    text_only = preflight(
        "gpt-4o",
        [{"role": "user", "content": [{"type": "text", "text": "What is in this image?"}]}],
    ).input_tokens
    # OpenAI's worked examples: 1024x1024 high -> 768x768, 4 tiles: 85 + 4*170 = 765;
    # 2048x4096 high -> 768x1536, 6 tiles: 1105; any size at low: 85.
    url = "https://example.test/cat.png"
    high = preflight("gpt-4o", _with_image(url, "high"), image_sizes={url: (1024, 1024)})
    assert high.input_tokens - text_only == 765
    assert high.method == "exact"
    tall = preflight("gpt-4o", _with_image(url, "high"), image_sizes={url: (2048, 4096)})
    assert tall.input_tokens - text_only == 1105
    low = preflight("gpt-4o", _with_image(url, "low"))
    assert low.input_tokens - text_only == 85
    assert low.method == "exact"
    mini = preflight("gpt-4o-mini", _with_image(url, "low"))
    assert mini.input_tokens - text_only == 2833  # gpt-4o-mini's image rates
    o1 = preflight("o1", _with_image(url, "high"), image_sizes={url: (1024, 1024)})
    assert o1.input_tokens - text_only == 75 + 4 * 150  # o1's
    assert o1.method == "exact"
    # gpt-4.1-mini bills 32-pixel patches: an estimate here, and said so.
    patches = preflight("gpt-4.1-mini", _with_image(url, "high"), image_sizes={url: (320, 320)})
    assert patches.input_tokens - text_only == 162  # 100 patches x 1.62
    assert patches.method == "estimated"


def test_an_images_size_is_read_from_its_data_url() -> None:
    text_only = preflight(
        "gpt-4o",
        [{"role": "user", "content": [{"type": "text", "text": "What is in this image?"}]}],
    ).input_tokens
    result = preflight("gpt-4o", _with_image(_png(600, 300), "high"))
    assert result.input_tokens - text_only == 85 + 2 * 170  # 600x300: 2x1 tiles
    assert result.method == "exact"


def test_an_image_of_unknown_size_counts_the_worst_case_marked_estimated() -> None:
    result = preflight("gpt-4o", _with_image("https://example.test/x.png", "auto"))
    assert result.method == "estimated"


def test_context_window_room_and_worst_case_cost_are_exact() -> None:
    result = preflight("gpt-4o-mini", JARGON, max_output_tokens=1000, catalog=CATALOG)
    assert result.context_window == 128_000
    assert result.room_for_output == 128_000 - 124
    assert result.max_output_tokens == 1000
    assert result.fits is True
    # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens.
    expected = Decimal(124) * Decimal("0.15") / 10**6 + Decimal(1000) * Decimal("0.60") / 10**6
    assert result.worst_case_cost == expected
    assert isinstance(result.worst_case_cost, Decimal)
    assert result.worst_case is not None and result.worst_case.status == "priced"


def test_without_max_output_the_worst_case_is_the_models_output_limit() -> None:
    result = preflight("gpt-4o-mini", JARGON, catalog=CATALOG)
    assert result.max_output_tokens == 16_384
    near_full = preflight("gpt-4o-mini", input="word " * 127_000, catalog=CATALOG)
    assert near_full.room_for_output is not None
    assert near_full.max_output_tokens == near_full.room_for_output < 16_384


def test_an_unknown_model_is_unpriced_never_zero_and_its_window_unknown() -> None:
    result = preflight("my-own-model-7b", input="hello there", max_output_tokens=50)
    assert result.context_window is None
    assert result.room_for_output is None
    assert result.fits is None
    assert result.method == "estimated"  # a stand-in tokenizer
    assert result.worst_case is not None
    assert result.worst_case.status == "unpriced"
    assert result.worst_case_cost is None


def test_a_request_that_cannot_fit_says_so() -> None:
    result = preflight("gpt-4", input="word " * 8_000, max_output_tokens=1_000)
    assert result.fits is False


def test_a_hugging_face_tokenizer_json_counts_open_models_exactly(tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"[UNK]": 0, "hello": 1, "open": 2, "world": 3, "!": 4}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    counting.register_tokenizer("pf-open-model*", str(path))
    register_context_window("pf-open-model", 4096, 1024)
    result = preflight("pf-open-model-1", input="hello open world ! unknown", provider="vllm")
    assert result.input_tokens == 5
    assert result.method == "exact"
    assert result.counted_by == f"tokenizer.json:{path}"
    assert result.context_window == 4096
    assert result.max_output_tokens == 1024
    chat = preflight("pf-open-model-1", [{"role": "user", "content": "hello"}])
    assert chat.method == "estimated"  # the model's chat template is not known here


def test_a_conversation_counted_turn_after_turn_counts_only_new_messages() -> None:
    cache = MessageCountCache(maxsize=64)
    conversation: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}]
    totals = []
    for turn in range(5):
        conversation.append({"role": "user", "content": f"Question number {turn}?"})
        totals.append(preflight("gpt-4o", list(conversation), cache=cache).input_tokens)
        conversation.append({"role": "assistant", "content": f"Answer number {turn}."})
    # Each message tokenized once: the system prompt, 5 questions, the 4 answers re-sent.
    assert cache.misses == 1 + 5 + 4
    assert cache.hits == sum(2 * turn for turn in range(5))  # turn t re-sends 2t messages
    uncached = preflight("gpt-4o", conversation[:-1], cache=None).input_tokens
    assert totals[-1] == uncached  # the cache changes speed, never the count


def test_the_cache_is_bounded() -> None:
    cache = MessageCountCache(maxsize=3)
    for i in range(10):
        preflight("gpt-4o", [{"role": "user", "content": f"message {i}"}], cache=cache)
    assert len(cache) == 3


def test_a_message_edited_in_place_is_counted_again() -> None:
    cache = MessageCountCache()
    message = {"role": "user", "content": "short"}
    first = preflight("gpt-4o", [message], cache=cache).input_tokens
    message["content"] = "a much longer message than before"
    assert preflight("gpt-4o", [message], cache=cache).input_tokens > first


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"model": ""}, ValueError),
        ({"model": "gpt-4o", "messages": "hello"}, TypeError),
        ({"model": "gpt-4o", "messages": ["hello"]}, TypeError),
        ({"model": "gpt-4o", "messages": [], "input": "x"}, ValueError),
        ({"model": "gpt-4o", "input": "x", "max_output_tokens": -1}, ValueError),
        ({"model": "gpt-4o", "input": "x", "client": object()}, TypeError),
    ],
)
def test_bad_input_is_a_clear_error(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        preflight(**kwargs)


def test_the_public_names() -> None:
    assert otel_tokens.preflight is preflight
    assert otel_tokens.ContextWindowExceeded is ContextWindowExceeded
    assert limits_of("openai/gpt-4o-mini-2024-07-18") == limits_of("gpt-4o-mini")
    assert limits_of("us.anthropic.claude-sonnet-4-20250514-v1:0") is not None


# --- fit_messages --------------------------------------------------------------------------
def _turns(n: int, words: int = 200) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are terse."}]
    for i in range(n):
        messages.append({"role": "user", "content": f"question {i} " + "word " * words})
        messages.append({"role": "assistant", "content": f"answer {i} " + "word " * words})
    messages.append({"role": "user", "content": "the last question"})
    return messages


def test_fit_messages_drops_the_oldest_turns_and_keeps_system_and_last_user() -> None:
    messages = _turns(10)
    fitted = fit_messages(messages, "gpt-4o", reserve=500, context_window=2000)
    assert fitted[0] is messages[0]
    assert fitted[-1] is messages[-1]
    assert len(fitted) < len(messages)
    assert fitted[1:-1] == messages[len(messages) - len(fitted) + 1 : -1]  # the newest turns
    assert preflight("gpt-4o", fitted).input_tokens <= 2000 - 500
    fuller = messages[:1] + messages[len(messages) - len(fitted) :]
    assert preflight("gpt-4o", fuller).input_tokens > 2000 - 500  # one more turn would not fit


def test_fit_messages_keeps_everything_that_fits() -> None:
    messages = _turns(2, words=5)
    assert fit_messages(messages, "gpt-4o", reserve=1000) == messages


def test_fit_messages_never_keeps_a_tool_result_without_its_call() -> None:
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    result = {"role": "tool", "tool_call_id": "c1", "content": "result " * 300}
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "first " * 300},
        call,
        result,
        {"role": "user", "content": "last"},
    ]
    fitted = fit_messages(messages, "gpt-4o", context_window=200)
    assert call not in fitted and result not in fitted
    assert fitted == [messages[0], messages[-1]]


def test_fit_messages_raises_when_even_the_essentials_do_not_fit() -> None:
    messages = [{"role": "system", "content": "word " * 500}, {"role": "user", "content": "hi"}]
    with pytest.raises(ContextWindowExceeded) as info:
        fit_messages(messages, "gpt-4o", reserve=100, context_window=300)
    assert info.value.context_window == 300
    assert info.value.input_tokens > 300 - 100
    assert "300" in str(info.value)


def test_fit_messages_needs_a_known_window() -> None:
    with pytest.raises(ValueError, match="context window"):
        fit_messages([{"role": "user", "content": "x"}], "my-own-model")


def test_the_documented_example_gives_the_values_in_its_comments() -> None:
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "preflight.md").read_text("utf-8")
    code = next(b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "worst_case_cost" in b)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    checked = 0
    for line in code.splitlines():
        match = re.match(r"^(p\.\w+)\s+# (.+?)(?::\s.*)?$", line)
        if match:
            expression, expected = match.groups()
            value = eval(expression, namespace)
            assert repr(value) == expected.strip(), (expression, value, expected)
            checked += 1
    assert checked == 7
