"""Local token counting: exact with no network, no cache folder and nothing beside the
checkout; a damaged encoding is reported, never a silent guess."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

import otel_tokens
from _processes import run
from otel_tokens import counting

# Token ids published with tiktoken (its README) and OpenAI's tokenizer page.
GOLDEN = {
    "o200k_base": {
        "hello world": [24912, 2375],
        "tiktoken is great!": [83, 8251, 2488, 382, 2212, 0],
    },
    "cl100k_base": {
        "hello world": [15339, 1917],
        "tiktoken is great!": [83, 1609, 5963, 374, 2294, 0],
    },
}
MODELS = {"o200k_base": "gpt-4o-mini", "cl100k_base": "gpt-4"}
PACKAGE = Path(otel_tokens.__file__).resolve().parent


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """A new user's process: a fresh HOME, an empty tiktoken cache folder, and any download
    sent to a port where nothing listens (so it fails at once, as with no network)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOKEN", "DATA_GYM"))}
    (tmp_path / "home").mkdir()
    (tmp_path / "empty-cache").mkdir()
    env.update(
        HOME=str(tmp_path / "home"),
        TIKTOKEN_CACHE_DIR=str(tmp_path / "empty-cache"),
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        NO_PROXY="",
    )
    return env


_PROBE = textwrap.dedent(
    """
    import json, sys
    from otel_tokens import counting
    out = {}
    for model in sys.argv[1:]:
        out[model] = {
            "exact": counting.counts_exactly(model),
            "hello world": counting.count_text("hello world", model),
            "tiktoken is great!": counting.count_text("tiktoken is great!", model),
        }
    print(json.dumps(out))
    """
)


def test_counts_exactly_offline_with_no_cache_folder(tmp_path: Path) -> None:
    """A fresh install with no network counts with the real encodings, not 4 chars/token."""
    proc = run(
        [sys.executable, "-c", _PROBE, *MODELS.values()], env=_offline_env(tmp_path), check=True
    )
    got = json.loads(proc.stdout)
    for encoding, model in MODELS.items():
        assert got[model] == {
            "exact": True,
            **{text: len(ids) for text, ids in GOLDEN[encoding].items()},
        }
    assert "4 characters per token" not in proc.stderr
    assert not any((tmp_path / "empty-cache").iterdir())  # nothing was downloaded or cached


@pytest.mark.parametrize("encoding", sorted(GOLDEN))
def test_bundled_encodings_give_the_published_token_ids(encoding: str) -> None:
    encoder = counting.encoder_for(MODELS[encoding])
    assert encoder is not None
    assert getattr(encoder, "name", None) == encoding
    for text, ids in GOLDEN[encoding].items():
        assert encoder.encode(text) == ids


@pytest.mark.parametrize("encoding", sorted(GOLDEN))
def test_bundled_encodings_equal_tiktokens_own(encoding: str) -> None:
    """Same ranks, pattern and special tokens as unmodified tiktoken builds from its download
    (tests/conftest.py gives tiktoken the files through its cache folder)."""
    import tiktoken

    ours = counting.encoder_for(MODELS[encoding])
    theirs = tiktoken.get_encoding(encoding)
    assert isinstance(ours, tiktoken.Encoding)
    assert ours is not theirs
    assert ours._mergeable_ranks == theirs._mergeable_ranks
    assert ours._pat_str == theirs._pat_str
    assert ours._special_tokens == theirs._special_tokens
    text = "Ünïcödé ✓ 日本語\r\n  x = 12345;  I'LL've don't\n\n\t end  "
    assert ours.encode_ordinary(text) == theirs.encode_ordinary(text)


def test_text_that_looks_like_a_special_token_is_counted_as_text() -> None:
    """A user's message containing "<|endoftext|>" is billed as plain text; counting it
    used to raise (tiktoken's encode refuses special tokens), losing the estimate."""
    import tiktoken

    text = "ends with <|endoftext|> and <|endofprompt|>"
    expected = len(tiktoken.get_encoding("o200k_base").encode_ordinary(text))
    assert counting.count_text(text, "gpt-4o") == expected
    assert counting.count_messages([{"role": "user", "content": text}], "gpt-4o") == (
        3 + 3 + 1 + expected
    )


def test_a_damaged_encoding_is_reported_not_guessed_silently(tmp_path: Path) -> None:
    """An install whose encoding file is damaged still counts (the call is not lost), but
    logs an error naming the encoding and `counts_exactly` says the count is a guess."""
    copy = tmp_path / "site" / "otel_tokens"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    damaged = copy / "_encodings" / "o200k_base.tiktoken.gz"
    damaged.write_bytes(damaged.read_bytes()[:100_000])
    env = _offline_env(tmp_path)
    env["PYTHONPATH"] = str(tmp_path / "site")
    proc = run([sys.executable, "-c", _PROBE, "gpt-4o", "gpt-4"], env=env, check=True)
    got = json.loads(proc.stdout)
    assert got["gpt-4o"] == {"exact": False, "hello world": 3, "tiktoken is great!": 5}
    assert got["gpt-4"]["exact"] is True  # the other encoding is intact
    assert "o200k_base cannot be loaded" in proc.stderr
    assert "4 characters per token" in proc.stderr


_CALLS = textwrap.dedent(
    """
    import json
    import sys

    import anthropic
    import openai
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_tokens_fakes import ProviderServer
    from otel_tokens.instrumentation import AnthropicInstrumentor, OpenAIInstrumentor
    from otel_tokens.pricing import Catalog
    from otel_tokens.summary import CostSummaryExporter, render

    spans, summary = InMemorySpanExporter(), CostSummaryExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer_provider.add_span_processor(SimpleSpanProcessor(summary))
    reader = InMemoryMetricReader()
    options = dict(
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[reader]),
        catalog=Catalog(),
    )
    OpenAIInstrumentor().instrument(**options)
    AnthropicInstrumentor().instrument(**options)
    messages = [{"role": "user", "content": sys.argv[1]}]
    read = ""
    with ProviderServer() as server:
        # A stream without include_usage on a server that is not OpenAI's: counted locally.
        with openai.OpenAI(api_key="t", base_url=server.openai_base_url, max_retries=0) as c:
            for model in ("gpt-4o-mini", "gpt-4"):
                list(c.chat.completions.create(model=model, messages=messages, stream=True))
        with anthropic.Anthropic(
            api_key="t", base_url=server.anthropic_base_url, max_retries=0, open_telemetry=False
        ) as c:
            kwargs = dict(model="claude-haiku-4-5", max_tokens=256, messages=messages)
            # Cut after the first text: input as reported, the output read counted by us.
            stream = c.messages.create(stream=True, **kwargs)
            for event in stream:
                if event.type == "content_block_delta":
                    read = event.delta.text
                    break
            stream.close()
            # Closed before any event: the whole request counted by us.
            c.messages.create(stream=True, **kwargs).close()
    points = [
        {"value": p.value, **p.attributes}
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "gen_ai.billing.tokens"
        for p in m.data.data_points
    ]
    calls = [dict(s.attributes) for s in spans.get_finished_spans()]
    print(json.dumps({"calls": calls, "points": points, "read": read,
                      "summary": render(summary.calls)}))
    """
)


def _ceil4(text: str) -> int:
    """The documented fallback: four characters per token, rounded up."""
    return max(1, -(-len(text) // 4)) if text else 0


def test_a_call_counted_without_its_tokenizer_says_so(tmp_path: Path) -> None:
    """The real openai and anthropic clients against the bundled server, in an install whose
    o200k_base file is damaged: every call counted at 4 characters per token carries usage
    source estimated_heuristic on its span and on its billing points (priced, status
    estimated), while a gpt-4 call (cl100k_base, intact) stays estimated."""
    import tiktoken

    from otel_tokens_fakes import DEFAULT_REPLY, estimate_tokens

    copy = tmp_path / "site" / "otel_tokens"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    damaged = copy / "_encodings" / "o200k_base.tiktoken.gz"
    damaged.write_bytes(damaged.read_bytes()[:100_000])
    env = _offline_env(tmp_path)
    env.update(PYTHONPATH=str(tmp_path / "site"), NO_PROXY="127.0.0.1,localhost")
    content = "Hello there, how are you today?"
    proc = run([sys.executable, "-c", _CALLS, content], env=env)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert proc.stderr.count("o200k_base cannot be loaded") == 1

    usage = "gen_ai.billing.usage."
    calls = [
        (
            c["gen_ai.request.model"],
            c["gen_ai.billing.usage_source"],
            c["gen_ai.billing.pricing_status"],
            {k.removeprefix(usage): v for k, v in c.items() if k.startswith(usage)},
            Decimal(c["gen_ai.billing.cost.decimal"]),
        )
        for c in got["calls"]
    ]
    heuristic_prompt = 3 + 3 + _ceil4("user") + _ceil4(content)  # OpenAI's chat format
    cl100k = tiktoken.get_encoding("cl100k_base")
    exact_prompt = 3 + 3 + len(cl100k.encode("user")) + len(cl100k.encode(content))
    reported_input = 7 + 3 + estimate_tokens(content)  # the server's Anthropic prompt
    mtok = Decimal(1_000_000)
    # genai-prices: gpt-4o-mini $0.15/$0.60, gpt-4 $30/$60, claude-haiku-4-5 $1/$5 per MTok.
    expected = [
        (
            "gpt-4o-mini",
            "estimated_heuristic",
            {"input": heuristic_prompt, "output": _ceil4(DEFAULT_REPLY)},
            (heuristic_prompt * Decimal("0.15") + _ceil4(DEFAULT_REPLY) * Decimal("0.6")),
        ),
        (
            "gpt-4",
            "estimated",
            {"input": exact_prompt, "output": len(cl100k.encode(DEFAULT_REPLY))},
            exact_prompt * Decimal(30) + len(cl100k.encode(DEFAULT_REPLY)) * Decimal(60),
        ),
        (
            "claude-haiku-4-5",
            "estimated_heuristic",
            {"input": reported_input, "output": _ceil4(got["read"])},
            reported_input * Decimal(1) + _ceil4(got["read"]) * Decimal(5),
        ),
        (
            "claude-haiku-4-5",
            "estimated_heuristic",
            {"input": heuristic_prompt},
            heuristic_prompt * Decimal(1),
        ),
    ]
    assert got["read"]
    assert calls == [
        (model, source, "estimated", buckets, cost / mtok)
        for model, source, buckets, cost in expected
    ]

    points: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for p in got["points"]:
        key = (p["gen_ai.request.model"], p["gen_ai.billing.token.bucket"])
        points.setdefault(key, []).append((p["gen_ai.billing.usage_source"], p["value"]))
    assert points == {
        ("gpt-4o-mini", "input"): [("estimated_heuristic", heuristic_prompt)],
        ("gpt-4o-mini", "output"): [("estimated_heuristic", _ceil4(DEFAULT_REPLY))],
        ("gpt-4", "input"): [("estimated", exact_prompt)],
        ("gpt-4", "output"): [("estimated", len(cl100k.encode(DEFAULT_REPLY)))],
        ("claude-haiku-4-5", "input"): [
            ("estimated_heuristic", reported_input),
            ("estimated_heuristic", heuristic_prompt),
        ],
        ("claude-haiku-4-5", "output"): [("estimated_heuristic", _ceil4(got["read"]))],
    }
    rows = [r for r in got["summary"].splitlines() if r.startswith("chat ")]
    notes = [r.split(" USD")[1].strip() for r in rows]
    rough = "estimated (4 chars/token)"
    assert notes == [rough, "estimated", rough, rough]


def test_a_tampered_encoding_fails_its_sha256(tmp_path: Path) -> None:
    import gzip

    copy = tmp_path / "site" / "otel_tokens"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    file = copy / "_encodings" / "cl100k_base.tiktoken.gz"
    data = gzip.decompress(file.read_bytes()).replace(b" 0\n", b" 1\n", 1)
    file.write_bytes(gzip.compress(data))
    env = _offline_env(tmp_path)
    env["PYTHONPATH"] = str(tmp_path / "site")
    proc = run([sys.executable, "-c", _PROBE, "gpt-4"], env=env, check=True)
    assert json.loads(proc.stdout)["gpt-4"]["exact"] is False
    assert "cl100k_base encoding is damaged: sha256" in proc.stderr


def test_an_unreadable_tokenizer_json_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    counting.register_tokenizer("broken-model*", str(bad))  # a name no other test uses
    with caplog.at_level(logging.ERROR, logger="otel_tokens.counting"):
        assert counting.count_text("abcdefgh", "broken-model-7b") == 2
    assert not counting.counts_exactly("broken-model-7b")
    assert counting.estimate_source("broken-model-7b") == "estimated_heuristic"
    assert counting.estimate_source("gpt-4o") == "estimated"
    assert "4 characters per token" in caplog.text


def test_install_tiktoken_files_from_the_package_serves_unmodified_tiktoken(
    tmp_path: Path,
) -> None:
    """Other code in the application that calls tiktoken.get_encoding can be served offline
    from the encodings we ship."""
    cache = tmp_path / "cache"
    assert counting.install_tiktoken_files(None, str(cache)) == ["o200k_base", "cl100k_base"]
    env = _offline_env(tmp_path)
    env["TIKTOKEN_CACHE_DIR"] = str(cache)
    code = "import tiktoken; print(tiktoken.get_encoding('cl100k_base').encode('hello world'))"
    proc = run([sys.executable, "-c", code], env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[15339, 1917]"


def test_package_data_is_small_and_complete() -> None:
    files = sorted(p.name for p in (PACKAGE / "_encodings").glob("*.gz"))
    assert files == ["cl100k_base.tiktoken.gz", "o200k_base.tiktoken.gz"]
    assert sum((PACKAGE / "_encodings" / f).stat().st_size for f in files) < 2_600_000
