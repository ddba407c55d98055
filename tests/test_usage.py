"""The usage model and the provider converters, on realistic payloads.

Each converter is fed raw JSON-shaped dicts and the providers' own SDK pydantic objects. The
cases that cost real money when they are got wrong are named after the trap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from anthropic.types import Usage as AnthropicUsage
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types import CompletionUsage
from openai.types.responses import ResponseUsage

from otel_tokens import semconv as sc
from otel_tokens.usage import (
    MAX_TOKENS_PER_CALL,
    InvalidUsageError,
    Modalities,
    TokenUsage,
    from_anthropic,
    from_gemini,
    from_openai_chat,
    from_openai_responses,
)
from otel_tokens.usage._stability import latest_only_from

# ---------------------------------------------------------------------------------------
# OpenAI Chat Completions
# ---------------------------------------------------------------------------------------

# A gpt-4o chat completion that hit the prompt cache (shape of the API's JSON response).
CHAT = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}

# An o3 completion: most of the completion is reasoning.
CHAT_REASONING = {
    "prompt_tokens": 1200,
    "completion_tokens": 5000,
    "total_tokens": 6200,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 4736, "audio_tokens": 0},
}


@pytest.mark.parametrize("as_sdk", [False, True], ids=["dict", "sdk"])
def test_openai_chat_prompt_includes_cached(as_sdk: bool) -> None:
    raw: Any = CompletionUsage.model_validate(CHAT) if as_sdk else CHAT
    usage = from_openai_chat(raw)
    # the trap: prompt_tokens already contains the 1920 cached tokens
    assert usage == TokenUsage(input=86, cache_read=1920, output=300)
    assert usage.input_total == 2006
    assert usage.output_total == 300
    assert usage.total_tokens == 2306


@pytest.mark.parametrize("as_sdk", [False, True], ids=["dict", "sdk"])
def test_openai_chat_reasoning_inside_completion(as_sdk: bool) -> None:
    raw: Any = CompletionUsage.model_validate(CHAT_REASONING) if as_sdk else CHAT_REASONING
    usage = from_openai_chat(raw)
    # the trap: completion_tokens already contains the reasoning tokens
    assert usage == TokenUsage(input=176, cache_read=1024, output=264, reasoning=4736)
    assert usage.output_total == 5000


def test_openai_chat_sdk_object_without_details() -> None:
    # Older models and many compatible servers send no *_details at all.
    raw = CompletionUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    assert from_openai_chat(raw) == TokenUsage(input=10, output=5)


def test_openai_chat_embeddings_and_legacy_completions() -> None:
    assert from_openai_chat({"prompt_tokens": 8, "total_tokens": 8}) == TokenUsage(input=8)


def test_openai_chat_audio_in_and_out() -> None:
    # gpt-4o-audio-preview: audio tokens are part of prompt/completion totals.
    usage = from_openai_chat(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 700,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 600},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 500},
        }
    )
    assert usage == TokenUsage(
        input=400, input_audio=600, output=200, output_audio=500
    ).with_modalities(Modalities(audio_input=600, audio_output=500))
    assert (usage.input_total, usage.output_total) == (1000, 700)


def test_openai_chat_cached_audio_overlap_is_real_usage() -> None:
    # OpenAI does not say which modality the cached tokens are: 800 cached and 600 audio
    # in a 1000-token prompt overlap; only the 200 uncached tokens can be uncached audio.
    usage = from_openai_chat(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 800, "audio_tokens": 600},
        }
    )
    # The reported breakdown keeps OpenAI's 600: upstream's audio.input_tokens includes any
    # cached audio.
    assert usage == TokenUsage(input_audio=200, cache_read=800, output=10).with_modalities(
        Modalities(audio_input=600)
    )
    assert usage.input_total == 1000


def test_openai_chat_cache_writes() -> None:
    # Models that bill cache writes report them inside prompt_tokens, like cached reads.
    raw = CompletionUsage.model_validate(
        {
            "prompt_tokens": 9000,
            "completion_tokens": 100,
            "total_tokens": 9100,
            "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 5000},
        }
    )
    usage = from_openai_chat(raw)
    assert usage == TokenUsage(input=3000, cache_read=1000, cache_write_5m=5000, output=100)
    assert usage.input_total == 9000


# ---------------------------------------------------------------------------------------
# OpenAI Responses
# ---------------------------------------------------------------------------------------

RESPONSES = {
    "input_tokens": 5000,
    "input_tokens_details": {"cached_tokens": 4096, "cache_write_tokens": 0},
    "output_tokens": 1200,
    "output_tokens_details": {"reasoning_tokens": 1024},
    "total_tokens": 6200,
}


@pytest.mark.parametrize("as_sdk", [False, True], ids=["dict", "sdk"])
def test_openai_responses(as_sdk: bool) -> None:
    raw: Any = ResponseUsage.model_validate(RESPONSES) if as_sdk else RESPONSES
    usage = from_openai_responses(raw)
    assert usage == TokenUsage(input=904, cache_read=4096, output=176, reasoning=1024)
    assert (usage.input_total, usage.output_total) == (5000, 1200)


@pytest.mark.parametrize("as_sdk", [False, True], ids=["dict", "sdk"])
def test_openai_responses_cache_writes(as_sdk: bool) -> None:
    raw_dict = {
        "input_tokens": 10000,
        "input_tokens_details": {
            "cached_tokens": 2000,
            "cache_write_tokens": 6000,
            "cache_write_tokens_details": {"ttl_30m_tokens": 6000, "ttl_12h_tokens": 0},
        },
        "output_tokens": 1000,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 11000,
    }
    raw: Any = ResponseUsage.model_validate(raw_dict) if as_sdk else raw_dict
    usage = from_openai_responses(raw)
    assert usage == TokenUsage(input=2000, cache_read=2000, cache_write_5m=6000, output=1000)


def test_openai_responses_reject_cache_beyond_input() -> None:
    with pytest.raises(InvalidUsageError, match=r"input_tokens \(100\)"):
        from_openai_responses(
            {
                "input_tokens": 100,
                "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 60},
                "output_tokens": 1,
            }
        )


# ---------------------------------------------------------------------------------------
# Anthropic
# ---------------------------------------------------------------------------------------

ANTHROPIC = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 40000,
    "output_tokens": 850,
}


@pytest.mark.parametrize("as_sdk", [False, True], ids=["dict", "sdk"])
def test_anthropic_input_excludes_cache_and_no_breakdown_means_5m(as_sdk: bool) -> None:
    raw: Any = AnthropicUsage.model_validate(ANTHROPIC) if as_sdk else ANTHROPIC
    usage = from_anthropic(raw)
    # the trap: input_tokens is only the uncached 12; the cache comes on top
    assert usage == TokenUsage(input=12, cache_write_5m=3000, cache_read=40000, output=850)
    assert usage.input_total == 43012
    assert usage.cache_write == 3000


@pytest.mark.parametrize("as_sdk", [False, True], ids=["dict", "sdk"])
def test_anthropic_cache_creation_breakdown(as_sdk: bool) -> None:
    raw_dict = {
        **ANTHROPIC,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
        "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1},
        "service_tier": "standard",
    }
    raw: Any = AnthropicUsage.model_validate(raw_dict) if as_sdk else raw_dict
    usage = from_anthropic(raw)
    assert usage == TokenUsage(
        input=12,
        cache_write_5m=1000,
        cache_write_1h=2000,
        cache_read=40000,
        output=850,
        web_search_requests=2,
    )


def test_anthropic_breakdown_short_of_total_gives_rest_the_default_ttl() -> None:
    usage = from_anthropic(
        {
            **ANTHROPIC,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 2000},
        }
    )
    assert (usage.cache_write_5m, usage.cache_write_1h) == (1000, 2000)


def test_anthropic_breakdown_larger_than_total_is_rejected() -> None:
    with pytest.raises(InvalidUsageError, match="exceeds cache_creation_input_tokens"):
        from_anthropic(
            {
                **ANTHROPIC,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 2000,
                    "ephemeral_1h_input_tokens": 2000,
                },
            }
        )


def test_anthropic_streaming_message_start_with_nulls() -> None:
    # message_start usage in a stream: cache fields may be null, output_tokens tiny.
    usage = from_anthropic(
        {
            "input_tokens": 25,
            "cache_creation_input_tokens": None,
            "cache_read_input_tokens": None,
            "cache_creation": None,
            "output_tokens": 1,
        }
    )
    assert usage == TokenUsage(input=25, output=1)


@pytest.mark.parametrize("as_sdk", [False, True], ids=["dict", "sdk"])
def test_anthropic_thinking_tokens(as_sdk: bool) -> None:
    raw_dict = {
        "input_tokens": 100,
        "output_tokens": 850,
        "output_tokens_details": {"thinking_tokens": 600},
    }
    raw: Any = AnthropicUsage.model_validate(raw_dict) if as_sdk else raw_dict
    usage = from_anthropic(raw)
    assert usage == TokenUsage(input=100, output=250, reasoning=600)
    assert usage.output_total == 850
    with pytest.raises(InvalidUsageError, match="thinking_tokens"):
        from_anthropic(
            {"input_tokens": 1, "output_tokens": 5, "output_tokens_details": {"thinking_tokens": 6}}
        )


# ---------------------------------------------------------------------------------------
# Gemini
# ---------------------------------------------------------------------------------------

GEMINI_CAMEL = {
    "promptTokenCount": 120000,
    "cachedContentTokenCount": 100000,
    "candidatesTokenCount": 900,
    "thoughtsTokenCount": 2100,
    "toolUsePromptTokenCount": 3000,
    "totalTokenCount": 126000,
}
GEMINI_SNAKE = {
    "prompt_token_count": 120000,
    "cached_content_token_count": 100000,
    "candidates_token_count": 900,
    "thoughts_token_count": 2100,
    "tool_use_prompt_token_count": 3000,
    "total_token_count": 126000,
}
GEMINI_EXPECTED = TokenUsage(input=23000, cache_read=100000, output=900, reasoning=2100)


@pytest.mark.parametrize(
    "raw",
    [
        GEMINI_CAMEL,
        GEMINI_SNAKE,
        # the REST API sends int64 as JSON strings
        {k: str(v) for k, v in GEMINI_CAMEL.items()},
    ],
    ids=["camelCase", "snake_case", "int64-strings"],
)
def test_gemini_shapes(raw: dict[str, Any]) -> None:
    usage = from_gemini(raw)
    # promptTokenCount includes the cache; thoughts are on top of candidates; tool-use
    # prompt tokens are input on top of the prompt
    assert usage == GEMINI_EXPECTED
    assert usage.input_total == 120000 + 3000
    assert usage.output_total == 900 + 2100
    assert usage.total_tokens == 126000


def test_gemini_sdk_like_object_with_enum_modalities() -> None:
    # google-genai's pydantic objects: snake_case attributes, enum modalities.
    class Modality:
        def __init__(self, name: str) -> None:
            self.name = name

        def __str__(self) -> str:
            return f"MediaModality.{self.name}"

    class Detail:
        def __init__(self, modality: str, token_count: int) -> None:
            self.modality = Modality(modality)
            self.token_count = token_count

    class Meta:
        prompt_token_count = 3000
        cached_content_token_count = None
        candidates_token_count = 200
        thoughts_token_count = None
        tool_use_prompt_token_count = None
        prompt_tokens_details = [Detail("TEXT", 1000), Detail("AUDIO", 2000)]
        cache_tokens_details = None
        candidates_tokens_details = [Detail("TEXT", 200)]

    assert from_gemini(Meta()) == TokenUsage(
        input=1000, input_audio=2000, output=200
    ).with_modalities(Modalities(text_input=1000, audio_input=2000, text_output=200))


def test_gemini_modalities_exclude_the_cached_part() -> None:
    # promptTokensDetails count the whole prompt; cacheTokensDetails the cached part of it.
    usage = from_gemini(
        {
            "promptTokenCount": 1500,
            "cachedContentTokenCount": 400,
            "candidatesTokenCount": 50,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": 1000},
                {"modality": "AUDIO", "tokenCount": 500},
            ],
            "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 400}],
        }
    )
    # Billing splits the cache off; the reported breakdown keeps it inside audio, as upstream
    # counts it (audio.input_tokens 500, of which audio.cache_read.input_tokens 400).
    assert usage == TokenUsage(
        input=1000, input_audio=100, cache_read=400, output=50
    ).with_modalities(Modalities(text_input=1000, audio_input=500, audio_cache_read=400))


def test_gemini_image_output() -> None:
    usage = from_gemini(
        {
            "promptTokenCount": 20,
            "candidatesTokenCount": 1300,
            "candidatesTokensDetails": [
                {"modality": "IMAGE", "tokenCount": 1290},
                {"modality": "TEXT", "tokenCount": 10},
            ],
        }
    )
    # No promptTokensDetails: no input modality is reported.
    assert usage == TokenUsage(input=20, output=10, output_image=1290).with_modalities(
        Modalities(text_output=10, image_output=1290)
    )


def test_gemini_cache_beyond_prompt_is_rejected() -> None:
    with pytest.raises(InvalidUsageError, match="cachedContentTokenCount"):
        from_gemini({"promptTokenCount": 100, "cachedContentTokenCount": 101})


# ---------------------------------------------------------------------------------------
# Rejections
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("convert", "raw", "fragments"),
    [
        (
            from_openai_chat,
            {"prompt_tokens": -1, "completion_tokens": 1},
            ["prompt_tokens", "negative", "-1"],
        ),
        (
            from_openai_chat,
            {"prompt_tokens": True, "completion_tokens": 1},
            ["prompt_tokens", "whole number", "True"],
        ),
        (
            from_openai_chat,
            {"prompt_tokens": 1.5, "completion_tokens": 1},
            ["prompt_tokens", "whole number", "1.5"],
        ),
        (from_openai_chat, {"prompt_tokens": "12a"}, ["prompt_tokens", "whole number", "12a"]),
        (from_openai_chat, {"prompt_tokens": float("nan")}, ["prompt_tokens", "nan"]),
        (
            from_openai_chat,
            {"prompt_tokens": 1000, "prompt_tokens_details": {"cached_tokens": 1001}},
            ["cached (1001)", "prompt_tokens (1000)", "includes"],
        ),
        (
            from_openai_chat,
            {"completion_tokens": 10, "completion_tokens_details": {"reasoning_tokens": 11}},
            ["reasoning (11)", "completion_tokens (10)"],
        ),
        (
            from_openai_chat,
            {"prompt_tokens": 2_000_000_000},
            ["prompt_tokens=2000000000", "single call"],
        ),
        (
            from_openai_chat,
            {"prompt_tokens_details": {"cached_tokens": -5}},
            ["prompt_tokens_details.cached_tokens", "negative"],
        ),
        (
            from_openai_responses,
            {
                "input_tokens": 10,
                "output_tokens": 5,
                "output_tokens_details": {"reasoning_tokens": 6},
            },
            ["reasoning (6)", "output_tokens (5)"],
        ),
        (from_anthropic, {"input_tokens": -3, "output_tokens": 1}, ["input_tokens", "negative"]),
        (
            from_anthropic,
            {"input_tokens": 1, "output_tokens": False},
            ["output_tokens", "whole number"],
        ),
        (
            from_anthropic,
            {"input_tokens": 1, "cache_read_input_tokens": 10**10},
            ["cache_read_input_tokens", "single call"],
        ),
        (from_gemini, {"promptTokenCount": "-7"}, ["promptTokenCount", "whole number"]),
        (
            from_gemini,
            {"promptTokenCount": 10, "thoughtsTokenCount": 2.5},
            ["thoughtsTokenCount", "2.5"],
        ),
        (from_openai_chat, None, ["OpenAI chat usage must be an object", "NoneType"]),
        (from_anthropic, [1, 2], ["Anthropic usage must be an object", "list"]),
        (from_gemini, "100", ["Gemini usage must be an object", "str"]),
    ],
)
def test_converters_reject_impossible_usage(convert: Any, raw: Any, fragments: list[str]) -> None:
    with pytest.raises(InvalidUsageError) as info:
        convert(raw)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_integral_floats_are_accepted() -> None:
    # JSON decoders may give 300.0 for 300; that is still a whole number of tokens.
    assert from_openai_chat({"prompt_tokens": 300.0}) == TokenUsage(input=300)


def test_invalid_usage_error_is_a_value_error() -> None:
    assert issubclass(InvalidUsageError, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"input": -1}, "input must not be negative"),
        ({"output": 1.0}, "output must be an int, got float"),
        ({"reasoning": True}, "reasoning must be an int, got bool"),
        ({"cache_read": "5"}, "cache_read must be an int, got str"),
        ({"source": "guess"}, "source must be one of 'provider', 'estimated', "),
    ],
)
def test_token_usage_validates_its_fields(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidUsageError, match=fragment):
        TokenUsage(**kwargs)


# ---------------------------------------------------------------------------------------
# Attributes, inclusive construction, addition
# ---------------------------------------------------------------------------------------


def test_to_attributes_has_inclusive_totals_and_disjoint_buckets() -> None:
    usage = TokenUsage(
        input=12,
        cache_write_5m=1000,
        cache_write_1h=2000,
        cache_read=40000,
        output=250,
        reasoning=600,
        web_search_requests=2,
    )
    attrs = usage.to_attributes()
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 43012
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 850
    assert attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 40000
    assert attrs[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 3000
    assert attrs[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 600
    assert attrs[sc.BILLING_USAGE_SOURCE] == "provider"
    assert attrs[sc.BILLING_USAGE_PREFIX + "input"] == 12
    assert attrs[sc.BILLING_USAGE_PREFIX + "cache_write_1h"] == 2000
    assert attrs[sc.BILLING_USAGE_PREFIX + "web_search"] == 2
    # zero buckets are left out
    assert sc.BILLING_USAGE_PREFIX + "input_audio" not in attrs
    assert TokenUsage.from_attributes(attrs) == usage


CACHE_WRITES = TokenUsage(input=12, cache_write_5m=1000, cache_write_1h=2000, output=250)


def test_cache_writes_carry_the_renamed_attribute_and_by_default_the_deprecated_one() -> None:
    # semantic-conventions-genai PR #440 renamed cache_creation to cache_write.
    attrs = CACHE_WRITES.to_attributes(latest_only=False)
    assert attrs["gen_ai.usage.cache_write.input_tokens"] == 3000
    assert attrs[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 3000
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 3000
    assert TokenUsage.from_attributes(attrs) == CACHE_WRITES


def test_latest_conventions_leave_the_deprecated_name_out() -> None:
    attrs = CACHE_WRITES.to_attributes(latest_only=True)
    assert attrs[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 3000
    assert sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS not in attrs
    assert {**attrs, sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 3000} == (
        CACHE_WRITES.to_attributes(latest_only=False)
    )
    assert TokenUsage.from_attributes(attrs) == CACHE_WRITES


@pytest.mark.parametrize(
    ("value", "latest"),
    [
        (None, False),
        ("", False),
        ("gen_ai_latest_experimental", True),
        ("http/dup, gen_ai_latest_experimental ", True),
        ("http,database", False),
        ("GEN_AI_LATEST_EXPERIMENTAL", False),  # upstream matches the token exactly
        ("gen_ai_latest_experimental/dup", False),
    ],
)
def test_semconv_stability_opt_in_values(value: str | None, latest: bool) -> None:
    assert latest_only_from(value) is latest


@pytest.mark.parametrize("value", [None, "http/dup, gen_ai_latest_experimental "])
def test_semconv_stability_opt_in_is_read_from_the_environment(value: str | None) -> None:
    # A fresh process: like upstream, the variable is read once per process.
    env = {k: v for k, v in os.environ.items() if k != "OTEL_SEMCONV_STABILITY_OPT_IN"}
    if value is not None:
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = value
    script = (
        "import json\n"
        "from otel_tokens.usage import TokenUsage\n"
        "print(json.dumps(TokenUsage(input=1, cache_write_5m=2, output=3).to_attributes()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    attrs = json.loads(done.stdout)
    assert attrs[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 2
    assert (sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS in attrs) is (value is None)


def test_from_attributes_accepts_otlp_json_strings() -> None:
    attrs = TokenUsage(input=7, output=3, source="estimated").to_attributes()
    as_strings = {k: str(v) for k, v in attrs.items()}
    assert TokenUsage.from_attributes(as_strings) == TokenUsage(
        input=7, output=3, source="estimated"
    )


def test_from_attributes_rejects_disagreeing_totals() -> None:
    attrs = TokenUsage(input=10, output=5).to_attributes()
    with pytest.raises(InvalidUsageError, match="disagrees"):
        TokenUsage.from_attributes({**attrs, sc.GEN_AI_USAGE_INPUT_TOKENS: 11})
    with pytest.raises(InvalidUsageError, match="disagrees"):
        TokenUsage.from_attributes({**attrs, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 4})


@pytest.mark.parametrize(
    "bad",
    [1.5, "1.5", "many", True, None, [1]],
    ids=["float", "float-string", "word", "bool", "none", "list"],
)
def test_from_attributes_never_truncates_or_guesses(bad: Any) -> None:
    with pytest.raises(InvalidUsageError, match="whole number"):
        TokenUsage.from_attributes({sc.BILLING_USAGE_PREFIX + "input": bad})


def test_from_attributes_rejects_unknown_source() -> None:
    with pytest.raises(InvalidUsageError, match="source"):
        TokenUsage.from_attributes({sc.BILLING_USAGE_SOURCE: "vibes"})


def test_from_inclusive() -> None:
    usage = TokenUsage.from_inclusive(
        input_total=1000,
        output_total=500,
        cache_read=300,
        cache_write_5m=100,
        cache_write_1h=50,
        reasoning=200,
        web_search_requests=1,
    )
    assert usage == TokenUsage(
        input=550,
        cache_read=300,
        cache_write_5m=100,
        cache_write_1h=50,
        output=300,
        reasoning=200,
        web_search_requests=1,
    )
    assert (usage.input_total, usage.output_total) == (1000, 500)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (
            {"input_total": 100, "output_total": 0, "cache_read": 80, "cache_write_5m": 30},
            "exceed the input total",
        ),
        ({"input_total": 0, "output_total": 10, "reasoning": 11}, "exceed the output total"),
        ({"input_total": -1, "output_total": 0}, "must not be negative"),
        ({"input_total": True, "output_total": 0}, "must be an int"),
        ({"input_total": 10.0, "output_total": 0}, "must be an int"),
        ({"input_total": MAX_TOKENS_PER_CALL + 1, "output_total": 0}, "single call"),
    ],
)
def test_from_inclusive_rejects(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidUsageError, match=fragment):
        TokenUsage.from_inclusive(**kwargs)


def test_addition_and_sticky_estimated() -> None:
    a = TokenUsage(input=1, cache_read=2, output=3)
    b = TokenUsage(input=10, reasoning=5, web_search_requests=1)
    assert a + b == TokenUsage(input=11, cache_read=2, output=3, reasoning=5, web_search_requests=1)
    assert (a + b).source == "provider"
    est = b.with_source("estimated")
    assert (a + est).source == "estimated"
    assert (est + a).source == "estimated"
    assert (a + est + a).is_estimated
    assert sum([a, a, a], TokenUsage()) == TokenUsage(input=3, cache_read=6, output=9)
    with pytest.raises(TypeError):
        _ = a + 1


@pytest.mark.parametrize(
    ("a", "b", "merged"),
    [
        ("provider", "provider", "provider"),
        ("provider", "estimated", "estimated"),
        ("estimated", "estimated", "estimated"),
        ("provider", "estimated_heuristic", "estimated_heuristic"),
        ("estimated", "estimated_heuristic", "estimated_heuristic"),
        ("estimated_heuristic", "estimated_heuristic", "estimated_heuristic"),
    ],
)
def test_a_sum_is_as_uncertain_as_its_least_certain_part(a: Any, b: Any, merged: str) -> None:
    """A sum with any part counted at 4 characters per token is a heuristic estimate; one
    with a tokenizer-counted part is estimated; only provider + provider is reported."""
    x = TokenUsage(input=3, source=a)
    y = TokenUsage(output=4, source=b)
    assert (x + y).source == merged
    assert (y + x).source == merged
    assert (x + y) == TokenUsage(input=3, output=4, source=merged)


def test_a_heuristic_estimate_is_an_estimate_and_round_trips() -> None:
    usage = TokenUsage(input=7, output=3, source="estimated_heuristic")
    assert usage.is_estimated
    attrs = usage.to_attributes()
    assert attrs[sc.BILLING_USAGE_SOURCE] == "estimated_heuristic"
    assert TokenUsage.from_attributes(attrs) == usage
    assert TokenUsage.from_attributes({k: str(v) for k, v in attrs.items()}) == usage
    assert TokenUsage(input=7).with_source("estimated_heuristic") == TokenUsage(
        input=7, source="estimated_heuristic"
    )
    assert from_anthropic({"input_tokens": 5}, source="estimated_heuristic").source == (
        "estimated_heuristic"
    )


def test_buckets_lists_non_zero_counts_in_order() -> None:
    usage = TokenUsage(output=3, input=1, web_search_requests=2)
    assert list(usage.buckets()) == [("input", 1), ("output", 3), ("web_search", 2)]
    assert list(TokenUsage().buckets()) == []


def test_source_keyword_on_converters() -> None:
    assert from_openai_chat({"prompt_tokens": 5}, source="estimated").is_estimated
    assert from_anthropic({"input_tokens": 5}, source="estimated").is_estimated
    assert from_gemini({"promptTokenCount": 5}, source="estimated").is_estimated


# ---------------------------------------------------------------------------------------
# Per-modality counts (semantic-conventions-genai PR #440): reported, inclusive, overlapping
# ---------------------------------------------------------------------------------------

MODALITY_NAMES = {
    sc.GEN_AI_USAGE_TEXT_INPUT_TOKENS,
    sc.GEN_AI_USAGE_IMAGE_INPUT_TOKENS,
    sc.GEN_AI_USAGE_AUDIO_INPUT_TOKENS,
    sc.GEN_AI_USAGE_TEXT_CACHE_READ_INPUT_TOKENS,
    sc.GEN_AI_USAGE_IMAGE_CACHE_READ_INPUT_TOKENS,
    sc.GEN_AI_USAGE_AUDIO_CACHE_READ_INPUT_TOKENS,
    sc.GEN_AI_USAGE_TEXT_OUTPUT_TOKENS,
    sc.GEN_AI_USAGE_IMAGE_OUTPUT_TOKENS,
    sc.GEN_AI_USAGE_AUDIO_OUTPUT_TOKENS,
}


def _modality_attributes(usage: TokenUsage) -> dict[str, int | str]:
    return {k: v for k, v in usage.to_attributes().items() if k in MODALITY_NAMES}


def test_modality_attributes_count_as_upstream_does() -> None:
    # Upstream's own example (gen_ai.usage.input_tokens note): 100 text tokens, 40 of them
    # cached, and 200 image tokens.
    usage = from_gemini(
        {
            "promptTokenCount": 300,
            "cachedContentTokenCount": 40,
            "candidatesTokenCount": 50,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": 100},
                {"modality": "IMAGE", "tokenCount": 200},
            ],
            "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 40}],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 50}],
        }
    )
    attrs = usage.to_attributes()
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 300
    assert attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 40
    assert _modality_attributes(usage) == {
        "gen_ai.usage.text.input_tokens": 100,
        "gen_ai.usage.text.cache_read.input_tokens": 40,
        "gen_ai.usage.image.input_tokens": 200,
        "gen_ai.usage.text.output_tokens": 50,
    }
    # Billing is unchanged: the cache is split off whatever its modality.
    assert dict(usage.buckets()) == {
        "input": 60,
        "input_image": 200,
        "cache_read": 40,
        "output": 50,
    }
    assert TokenUsage.from_attributes(attrs) == usage


@pytest.mark.parametrize(
    "usage",
    [
        from_openai_chat(CHAT),  # reports audio_tokens 0: a zero says nothing
        from_openai_chat(CompletionUsage.model_validate(CHAT)),
        from_openai_responses({"input_tokens": 10, "output_tokens": 5}),
        from_anthropic(ANTHROPIC),
        from_gemini({"promptTokenCount": 5, "candidatesTokenCount": 1}),
        TokenUsage(input=5, input_audio=3, output_image=2),  # buckets alone are not a report
    ],
    ids=[
        "openai-zeros",
        "openai-sdk-zeros",
        "responses",
        "anthropic",
        "gemini-no-details",
        "buckets",
    ],
)
def test_modality_attributes_only_for_what_the_provider_reported(usage: TokenUsage) -> None:
    assert usage.modalities is None
    assert not _modality_attributes(usage)


def test_openai_modality_counts_are_copied_with_text_where_reported() -> None:
    # gpt-4o-audio-preview also reports text_tokens; image_tokens 0 is not an attribute.
    usage = from_openai_chat(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 700,
            "prompt_tokens_details": {
                "cached_tokens": 800,
                "audio_tokens": 600,
                "text_tokens": 400,
                "image_tokens": 0,
            },
            "completion_tokens_details": {"audio_tokens": 500, "text_tokens": 200},
        }
    )
    assert _modality_attributes(usage) == {
        "gen_ai.usage.text.input_tokens": 400,
        "gen_ai.usage.audio.input_tokens": 600,  # cached audio included, as upstream counts
        "gen_ai.usage.text.output_tokens": 200,
        "gen_ai.usage.audio.output_tokens": 500,
    }
    assert usage.input_audio == 200  # billing: only the uncached remainder can be audio


def test_gemini_tool_use_prompt_without_details_leaves_input_modalities_unknown() -> None:
    raw: dict[str, Any] = {
        "promptTokenCount": 1000,
        "toolUsePromptTokenCount": 300,
        "candidatesTokenCount": 20,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1000}],
        "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 20}],
    }
    # 1000 would be short of the text input: the 300 tool-use tokens have no modality.
    assert _modality_attributes(from_gemini(raw)) == {sc.GEN_AI_USAGE_TEXT_OUTPUT_TOKENS: 20}
    raw["toolUsePromptTokensDetails"] = [{"modality": "TEXT", "tokenCount": 300}]
    assert _modality_attributes(from_gemini(raw)) == {
        sc.GEN_AI_USAGE_TEXT_INPUT_TOKENS: 1300,
        sc.GEN_AI_USAGE_TEXT_OUTPUT_TOKENS: 20,
    }
    assert from_gemini(raw).input_total == 1300


@pytest.mark.parametrize(
    "raw",
    [
        {  # modality details add up to more than the prompt
            "promptTokenCount": 100,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": 80},
                {"modality": "IMAGE", "tokenCount": 40},
            ],
        },
        {  # more text read from the cache than text in the prompt
            "promptTokenCount": 100,
            "cachedContentTokenCount": 60,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 50}],
            "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 60}],
        },
        {  # cache details beyond the cached count
            "promptTokenCount": 100,
            "cachedContentTokenCount": 10,
            "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 20}],
        },
    ],
    ids=["inputs-beyond-prompt", "text-cache-beyond-text", "cache-details-beyond-cache"],
)
def test_a_contradictory_breakdown_is_left_out_and_the_usage_kept(raw: dict[str, Any]) -> None:
    usage = from_gemini(raw)
    assert usage.modalities is None
    assert not _modality_attributes(usage)
    assert usage.input_total == 100


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({sc.GEN_AI_USAGE_TEXT_INPUT_TOKENS: 11}, "per-modality input counts add up to 11"),
        (
            {sc.GEN_AI_USAGE_TEXT_INPUT_TOKENS: 6, sc.GEN_AI_USAGE_AUDIO_INPUT_TOKENS: 5},
            "per-modality input",
        ),
        ({sc.GEN_AI_USAGE_AUDIO_CACHE_READ_INPUT_TOKENS: 1}, "per-modality cache read"),
        (
            {
                sc.GEN_AI_USAGE_TEXT_INPUT_TOKENS: 2,
                sc.GEN_AI_USAGE_TEXT_CACHE_READ_INPUT_TOKENS: 3,
            },
            "text cache reads",
        ),
        ({sc.GEN_AI_USAGE_IMAGE_OUTPUT_TOKENS: 6}, "per-modality output"),
        ({sc.GEN_AI_USAGE_TEXT_OUTPUT_TOKENS: -1}, "must not be negative"),
    ],
)
def test_from_attributes_rejects_modality_counts_beyond_their_totals(
    extra: dict[str, int], fragment: str
) -> None:
    attrs = TokenUsage(input=10, output=5).to_attributes()
    with pytest.raises(InvalidUsageError, match=fragment):
        TokenUsage.from_attributes({**attrs, **extra})


def test_modalities_reject_bad_counts_and_types() -> None:
    with pytest.raises(InvalidUsageError, match="must not be negative"):
        Modalities(text_input=-1)
    with pytest.raises(InvalidUsageError, match="must be an int"):
        Modalities(audio_output=True)
    with pytest.raises(InvalidUsageError, match="must be Modalities"):
        TokenUsage(input=1).with_modalities({"text_input": 1})  # type: ignore[arg-type]
    assert Modalities(text_input=0) == Modalities()  # a reported zero is no count
    assert TokenUsage(input=1).with_modalities(Modalities()).modalities is None


def test_modalities_survive_attributes_source_and_addition() -> None:
    text = TokenUsage(input=10, output=5).with_modalities(Modalities(text_input=10, text_output=5))
    audio = TokenUsage(input_audio=7, output=1).with_modalities(
        Modalities(text_input=0, audio_input=7, text_output=1)
    )
    assert TokenUsage.from_attributes(text.to_attributes()) == text
    assert text.with_source("estimated").modalities == text.modalities
    # A sum keeps a count only where every part reported it.
    assert (text + audio).modalities == Modalities(text_output=6)
    assert (text + TokenUsage(input=1)).modalities is None
    assert (text + text).modalities == Modalities(text_input=20, text_output=10)


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------

_count = st.integers(min_value=0, max_value=MAX_TOKENS_PER_CALL)
usages = st.builds(
    TokenUsage,
    input=_count,
    input_audio=_count,
    input_image=_count,
    cache_read=_count,
    cache_write_5m=_count,
    cache_write_1h=_count,
    output=_count,
    output_audio=_count,
    output_image=_count,
    reasoning=_count,
    web_search_requests=st.integers(min_value=0, max_value=100_000),
    source=st.sampled_from(["provider", "estimated", "estimated_heuristic"]),
)


@settings(max_examples=300)
@given(usages)
def test_property_attributes_round_trip_losslessly(usage: TokenUsage) -> None:
    attrs = usage.to_attributes()
    assert all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in attrs.values())
    assert TokenUsage.from_attributes(attrs) == usage


@st.composite
def usages_with_modalities(draw: st.DrawFn) -> TokenUsage:
    """A usage with a breakdown that fits its totals, some counts not reported."""
    usage = draw(usages)

    def parts(total: int) -> list[int | None]:
        counts: list[int | None] = []
        for _ in range(3):
            count = draw(
                st.none() | st.integers(min_value=0, max_value=min(total, MAX_TOKENS_PER_CALL))
            )
            counts.append(count)
            total -= count or 0
        return counts

    inputs, outputs = parts(usage.input_total), parts(usage.output_total)
    cache_left = usage.cache_read
    cached: list[int | None] = []
    for modality_input in inputs:
        count = draw(
            st.none() | st.integers(min_value=0, max_value=min(modality_input or 0, cache_left))
        )
        cached.append(count)
        cache_left -= count or 0
    return usage.with_modalities(
        Modalities(
            text_input=inputs[0],
            image_input=inputs[1],
            audio_input=inputs[2],
            text_cache_read=cached[0],
            image_cache_read=cached[1],
            audio_cache_read=cached[2],
            text_output=outputs[0],
            image_output=outputs[1],
            audio_output=outputs[2],
        )
    )


@settings(max_examples=300)
@given(usages_with_modalities())
def test_property_modality_attributes_round_trip_and_fit_the_totals(usage: TokenUsage) -> None:
    for latest_only in (False, True):
        attrs = usage.to_attributes(latest_only=latest_only)
        assert TokenUsage.from_attributes(attrs) == usage
        assert TokenUsage.from_attributes({k: str(v) for k, v in attrs.items()}) == usage
        modality = {k: int(v) for k, v in attrs.items() if k in MODALITY_NAMES}
        assert all(v > 0 for v in modality.values())  # never a 0 for "not reported"
        inputs = sum(
            v
            for k, v in modality.items()
            if k.endswith(("text.input_tokens", "image.input_tokens", "audio.input_tokens"))
        )
        assert inputs <= usage.input_total
        cached = sum(v for k, v in modality.items() if ".cache_read." in k)
        assert cached <= usage.cache_read
        outputs = sum(v for k, v in modality.items() if k.endswith(".output_tokens"))
        assert outputs <= usage.output_total


@settings(max_examples=300)
@given(usages)
def test_property_inclusive_totals_are_sums_of_buckets(usage: TokenUsage) -> None:
    token_buckets = [count for name, count in usage.buckets() if name != "web_search"]
    assert usage.total_tokens == sum(token_buckets)
    attrs = usage.to_attributes()
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == sum(
        int(attrs.get(sc.BILLING_USAGE_PREFIX + b, 0))
        for b in (
            "input",
            "input_audio",
            "input_image",
            "cache_read",
            "cache_write_5m",
            "cache_write_1h",
        )
    )
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == sum(
        int(attrs.get(sc.BILLING_USAGE_PREFIX + b, 0))
        for b in ("output", "output_audio", "output_image", "reasoning")
    )


@settings(max_examples=300)
@given(usages, usages)
def test_property_addition_is_bucketwise(a: TokenUsage, b: TokenUsage) -> None:
    s = a + b
    assert s.input_total == a.input_total + b.input_total
    assert s.output_total == a.output_total + b.output_total
    assert s.web_search_requests == a.web_search_requests + b.web_search_requests
    assert s.is_estimated == (a.is_estimated or b.is_estimated)
    assert a + b == b + a


@settings(max_examples=300)
@given(
    st.integers(0, 10**8),
    st.integers(0, 10**8),
    st.integers(0, 10**8),
    st.integers(0, 10**8),
    st.integers(0, 10**8),
    st.integers(0, 10**8),
)
def test_property_from_inclusive_inverts_the_totals(
    uncached: int, read: int, w5: int, w1: int, out: int, reasoning: int
) -> None:
    usage = TokenUsage.from_inclusive(
        input_total=uncached + read + w5 + w1,
        output_total=out + reasoning,
        cache_read=read,
        cache_write_5m=w5,
        cache_write_1h=w1,
        reasoning=reasoning,
    )
    assert usage == TokenUsage(
        input=uncached,
        cache_read=read,
        cache_write_5m=w5,
        cache_write_1h=w1,
        output=out,
        reasoning=reasoning,
    )


@st.composite
def openai_chat_payloads(draw: st.DrawFn) -> dict[str, Any]:
    prompt = draw(st.integers(0, 10**7))
    cached = draw(st.integers(0, prompt))
    cache_write = draw(st.integers(0, prompt - cached))
    audio = draw(st.integers(0, prompt))
    completion = draw(st.integers(0, 10**7))
    reasoning = draw(st.integers(0, completion))
    audio_out = draw(st.integers(0, completion - reasoning))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": cached,
            "cache_write_tokens": cache_write,
            "audio_tokens": audio,
        },
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": audio_out},
    }


@settings(max_examples=300)
@given(openai_chat_payloads())
def test_property_openai_chat_keeps_the_inclusive_totals(raw: dict[str, Any]) -> None:
    usage = from_openai_chat(raw)
    assert usage.input_total == raw["prompt_tokens"]
    assert usage.output_total == raw["completion_tokens"]
    assert usage.cache_read == raw["prompt_tokens_details"]["cached_tokens"]
    assert usage.reasoning == raw["completion_tokens_details"]["reasoning_tokens"]
    assert from_openai_chat(CompletionUsage.model_validate(raw)) == usage


@settings(max_examples=300)
@given(
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 100),
)
def test_property_anthropic_input_total_adds_the_cache(
    inp: int, read: int, w5: int, w1: int, out: int, searches: int
) -> None:
    raw = {
        "input_tokens": inp,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": w5 + w1,
        "cache_creation": {"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1},
        "output_tokens": out,
        "server_tool_use": {"web_search_requests": searches, "web_fetch_requests": 0},
    }
    usage = from_anthropic(raw)
    assert usage.input_total == inp + read + w5 + w1
    assert (usage.cache_write_5m, usage.cache_write_1h) == (w5, w1)
    assert from_anthropic(AnthropicUsage.model_validate(raw)) == usage


@settings(max_examples=300)
@given(
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
)
def test_property_gemini_totals(
    prompt: int, cached_share: int, candidates: int, thoughts: int, tool: int
) -> None:
    cached = min(cached_share, prompt)
    raw = {
        "promptTokenCount": prompt,
        "cachedContentTokenCount": cached,
        "candidatesTokenCount": candidates,
        "thoughtsTokenCount": thoughts,
        "toolUsePromptTokenCount": tool,
    }
    usage = from_gemini(raw)
    assert usage.input_total == prompt + tool
    assert usage.output_total == candidates + thoughts
    assert usage.cache_read == cached
    snake = {
        "prompt_token_count": prompt,
        "cached_content_token_count": cached,
        "candidates_token_count": candidates,
        "thoughts_token_count": thoughts,
        "tool_use_prompt_token_count": tool,
    }
    assert from_gemini(snake) == usage
