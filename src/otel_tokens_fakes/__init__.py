"""Fake provider servers: local HTTP servers speaking each provider's wire format, one per
wire format, for the tests, the benchmarks (``bench/``) and the offline demo.

This is test support, not part of ``otel_tokens``: it is not in the wheel (an editable
install of a clone puts ``src/`` on the path, so ``pip install -e '.[demo]'`` has it), and
``otel_tokens`` imports it only when ``otel-tokens demo`` runs without API keys. Standard
library only; it imports nothing from ``otel_tokens``.

The real client libraries are pointed at a server, so they run their genuine code paths
(JSON parsing, SSE and AWS event-stream decoding, stream helpers, raw responses, error
mapping, retries) without network access:

* `ProviderServer` (``_provider.py``, ``_http.py``, ``_openai*.py``, ``_anthropic.py``):
  OpenAI, Azure OpenAI and Anthropic; scenarios and control headers below.
* `GeminiServer` (``_gemini.py``): the Gemini REST wire format, Gemini Developer API and
  Vertex AI, for ``google-genai``; its control headers are in its module.
* `MistralServer` (``_mistral.py``): Mistral AI's chat, FIM and embeddings (JSON and SSE).
* `CohereServer` (``_cohere.py``): Cohere's v2 chat (JSON and its typed SSE events), embed and
  rerank.
* `OllamaServer` (``_ollama.py``): Ollama's native API (JSON and NDJSON streams).
* `OpenAIShapedServer` (``_openai_shaped.py``): OpenAI-shaped chat completions with the usage
  placement of groq and together (for their own SDKs).
* `UsageReportServer` (``_usage_reports.py``): OpenAI's organisation Usage and Costs APIs and
  Anthropic's Admin API usage and cost reports (paged, grouped), for ``otel-tokens reconcile``.
* `BedrockServer` (``_bedrock.py``): Amazon Bedrock's runtime (Converse, InvokeModel and
  their streams in the binary AWS event-stream framing), for ``boto3``; its control headers
  are in its module.

Usage::

    with ProviderServer() as srv:
        client = openai.OpenAI(api_key="test", base_url=srv.openai_base_url)
        claude = anthropic.Anthropic(api_key="test", base_url=srv.anthropic_base_url)
        azure = openai.AzureOpenAI(api_key="test", azure_endpoint=srv.url, api_version="2024-10-21")
        ...
        srv.requests[-1].body  # what the SDK sent

    with GeminiServer() as g:
        genai.Client(api_key="test", http_options={"base_url": g.base_url})

    with BedrockServer() as b:
        boto3.client("bedrock-runtime", endpoint_url=b.endpoint_url, region_name="us-east-1")

    $ python -m otel_tokens_fakes --port 8787 [--scenario cache] [--verbose]

The OpenAI and Anthropic fake (`ProviderServer`)
================================================

Endpoints
---------
OpenAI (prefix ``/v1``; ``/openai/v1`` and no prefix work too):

* ``POST /v1/chat/completions`` -- JSON or SSE (``stream: true``). With
  ``stream_options.include_usage`` every chunk carries ``"usage": null`` and a last chunk has
  ``"choices": []`` and the usage; without it the stream carries no usage at all. Honours ``n``,
  ``max_tokens``/``max_completion_tokens``, ``reasoning_effort``, ``service_tier`` and tools (see
  ``tool_call``). Chunks carry ``obfuscation`` unless ``stream_options.include_obfuscation`` is
  false.
* ``POST /v1/responses`` -- JSON or typed SSE events: ``response.created``,
  ``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
  ``response.output_text.delta``..., ``response.output_text.done``, ``response.content_part.done``,
  ``response.output_item.done``, then ``response.completed`` carrying the usage
  (``response.incomplete`` when ``max_output_tokens`` cuts the answer short).
* ``POST /v1/responses/input_tokens`` -- the input tokens ``/v1/responses`` would bill the
  same body, as ``{"object": "response.input_tokens", "input_tokens": N}``.
* ``POST /v1/embeddings`` -- float or base64 vectors; ``dimensions`` honoured.
* ``POST /v1/completions`` -- legacy text completions, JSON or SSE (``include_usage`` as for chat);
  the default ``max_tokens`` is 16 as on the real API.

Azure OpenAI: ``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` (also
``completions`` and ``embeddings``; ``api-version`` is required) and ``/openai/responses``. Azure
flavour: ``prompt_filter_results``/``content_filter_results``, a first stream chunk with
``"choices": []``, ``"model": ""`` and the prompt filter results, ``apim-request-id`` and
``x-ms-region`` headers, Azure's 429/401 error bodies. The served model comes from the
deployment name when it is a known model alias, else from the ``model`` in the body.

Anthropic: ``POST /v1/messages`` (JSON or SSE; the beta surface ``/v1/messages?beta=true`` with an
``anthropic-beta`` header is served the same way) and ``POST /v1/messages/count_tokens``. A stream
is ``message_start`` (usage with ``input_tokens``, ``cache_creation_input_tokens``,
``cache_read_input_tokens``, ``cache_creation.ephemeral_5m_input_tokens``/``..._1h_...`` and
``output_tokens: 1``), ``content_block_start``, ``ping``, ``content_block_delta``...,
``content_block_stop``, ``message_delta`` (cumulative usage: ``output_tokens`` and the input counts,
plus ``server_tool_use`` when relevant) and ``message_stop``. ``thinking`` of type ``enabled`` or
``adaptive`` adds a thinking block (``thinking_delta`` + ``signature_delta``), billed as output
tokens and reported in ``usage.output_tokens_details.thinking_tokens``.

``GET /health`` answers ``{"status": "ok"}``.

Usage numbers (deterministic)
-----------------------------
* Text counts ``ceil(len(text) / 4)`` tokens (:func:`estimate_tokens`). Chat prompts add 3 tokens
  plus 4 per message, Responses 3 plus 4 per input item, Anthropic 7 plus 3 per message; tools add
  their compact JSON; an image part is 85 tokens (OpenAI) or 1600 (Anthropic). Legacy completions
  and embeddings count the bare text (token arrays count their length). ``count_tokens`` returns
  the same total that ``messages.create`` reports (input + cache read + cache write).
* The reply is :data:`DEFAULT_REPLY` split on whitespace: each word is one output token and one
  stream delta, so streamed deltas add up exactly to the reported usage. Tool-call arguments and
  search queries are streamed in pieces that count one output token each.
* OpenAI reasoning models (served model starting ``o1``/``o3``/``o4``/``gpt-5``/``codex``, except
  ``*-chat-latest``) report reasoning tokens by effort: none/minimal 0, low 32, medium (default)
  64, high 192, xhigh 384; ``completion_tokens``/``output_tokens`` include them.
* The response ``model`` is the dated snapshot of the requested alias (:func:`served_model`), e.g.
  ``gpt-4o-mini`` -> ``gpt-4o-mini-2024-07-18``, ``claude-sonnet-4-5`` ->
  ``claude-sonnet-4-5-20250929``, ``gpt-3.5-turbo-instruct`` ->
  ``gpt-3.5-turbo-instruct:20230824-v2``, ``text-embedding-ada-002`` ->
  ``text-embedding-ada-002-v2``. Unknown names are served unchanged.
* ``service_tier`` echoes the request (``fast`` -> ``priority``; ``auto`` or absent -> ``default``).

Scenarios
---------
Chosen per request by the header ``x-test-scenario`` (comma separated, combinable), else by
``metadata.test_scenario`` in the body, else by the server default (``ProviderServer(scenario=...)``
or ``--scenario``). An unknown name is answered with a 400 so that typos show.

``ok``                 Normal answer (the default).
``cache``              Prompt caching. OpenAI: ``cached_tokens`` = half the prompt. Anthropic:
                       ``cache_read_input_tokens`` = half the prompt,
                       ``cache_creation_input_tokens`` = a quarter (all 5-minute unless
                       ``x-test-cache-write-1h``), the rest is ``input_tokens``.
``rate_limit``         429 with the provider's error JSON and ``retry-after`` (and the rate-limit
                       headers showing exhaustion).
``rate_limit_once``    429 on the first attempt only (``x-stainless-retry-count: 0``), success on a
                       retry; sends ``retry-after-ms: 10`` so SDK retries are quick.
``server_error``       OpenAI/Azure 500 ``server_error``; Anthropic 529 ``overloaded_error``.
``server_error_once``  As ``server_error``, on the first attempt only.
``internal_error``     500 everywhere (Anthropic ``api_error``).
``bad_request``        400 ``invalid_request_error``.
``auth_error``         401 (OpenAI ``invalid_api_key``, Anthropic ``authentication_error``).
``drop_mid_stream``    Streams: about half of the SSE events, then the connection is closed in the
                       middle of the chunked body (the client sees an incomplete read). JSON: half
                       the body, then the close. ``x-test-drop-after: N`` sets the events sent.
``stream_error``       Streams: about half of the events, then the provider's in-stream error
                       (OpenAI ``data: {"error": ...}``, Responses ``response.failed``, Anthropic
                       ``event: error`` with ``overloaded_error``). JSON: like ``server_error``.
``slow_stream``        Sleep between SSE events (``stream_delay``, default 50 ms).
``web_search``         Anthropic: ``server_tool_use``/``web_search_tool_result`` block pairs and
                       ``usage.server_tool_use.web_search_requests`` (default 2). Each search adds
                       750 input tokens, so the cumulative ``input_tokens`` of ``message_delta``
                       (and of the JSON answer) exceed those of ``message_start``, as on the real
                       API. Responses: ``web_search_call`` output items and their events.
``no_stream_usage``    OpenAI chat and legacy completions streams ignore
                       ``stream_options.include_usage`` (no usage chunk), as some
                       OpenAI-compatible servers do.
``tool_call``          When the request declares a function tool: call the first one with arguments
                       built from its JSON schema (``finish_reason: tool_calls``, ``stop_reason:
                       tool_use`` or a ``function_call`` item), streamed as argument deltas.

Control headers (with any scenario)
-----------------------------------
``x-test-cached-tokens: N``        OpenAI ``cached_tokens``; Anthropic ``cache_read_input_tokens``.
``x-test-cache-write-tokens: N``   Anthropic ``cache_creation_input_tokens``; OpenAI
                                   ``cache_write_tokens``.
``x-test-cache-write-1h: N``       Anthropic: N of the cache writes are 1-hour, the rest 5-minute.
``x-test-cache-write-12h: N``      OpenAI Responses: ``cache_write_tokens_details.ttl_12h_tokens``.
``x-test-reasoning-tokens: N``     Reasoning (OpenAI) or thinking (Anthropic) tokens, any model.
``x-test-output-tokens: N``        Reply length in words (the default sentence is cycled).
``x-test-reply: text``             The reply text (split on whitespace).
``x-test-served-model: name``      The model reported in the response.
``x-test-web-search-requests: N``  Searches for ``web_search``.
``x-test-stream-delay-ms: N``      Delay between SSE events, with or without ``slow_stream``.
``x-test-latency-ms: N``           Delay before answering.
``x-test-drop-after: N``           Events sent before ``drop_mid_stream``/``stream_error`` strike.
``x-test-retry-after: S``          ``retry-after`` seconds of 429 answers (default 1).

Cached and cache-write counts are parts of the prompt: when they exceed the estimate, the prompt
grows to hold them (OpenAI ``prompt_tokens`` >= cached + written; Anthropic ``input_tokens`` >= 1).

"""

from __future__ import annotations

from ._bedrock import REPLY as BEDROCK_REPLY
from ._bedrock import BedrockServer, event_message
from ._cohere import REPLY as COHERE_REPLY
from ._cohere import WORDS as COHERE_WORDS
from ._cohere import CohereServer
from ._controls import DEFAULT_REPLY, SCENARIOS
from ._estimate import estimate_tokens
from ._gemini import REPLY as GEMINI_REPLY
from ._gemini import GeminiServer
from ._loopback import LoopbackServer
from ._mistral import REPLY as MISTRAL_REPLY
from ._mistral import WORDS as MISTRAL_WORDS
from ._mistral import MistralServer
from ._models import served_model
from ._ollama import PIECES as OLLAMA_PIECES
from ._ollama import OllamaServer
from ._openai_shaped import PIECES as OPENAI_SHAPED_PIECES
from ._openai_shaped import OpenAIShapedServer
from ._provider import ProviderServer, main
from ._request import RecordedRequest
from ._usage_reports import UsageReportServer

__all__ = [
    "BEDROCK_REPLY",
    "COHERE_REPLY",
    "COHERE_WORDS",
    "DEFAULT_REPLY",
    "GEMINI_REPLY",
    "MISTRAL_REPLY",
    "MISTRAL_WORDS",
    "OLLAMA_PIECES",
    "OPENAI_SHAPED_PIECES",
    "SCENARIOS",
    "BedrockServer",
    "CohereServer",
    "GeminiServer",
    "LoopbackServer",
    "MistralServer",
    "OllamaServer",
    "OpenAIShapedServer",
    "ProviderServer",
    "RecordedRequest",
    "UsageReportServer",
    "estimate_tokens",
    "event_message",
    "main",
    "served_model",
]
