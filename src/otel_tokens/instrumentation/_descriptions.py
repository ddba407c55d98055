"""One `Description` per instrumented client library (see docs/ARCHITECTURE.md, "Adding a
provider")."""

from __future__ import annotations

from ._description import Description, LibrarySpan, Target

OPENAI = Description(
    name="openai",
    requirement="openai >= 1.66",
    module="openai",
    adapter="otel_tokens.instrumentation.openai:OpenAIAdapter",
    streams=("openai:Stream", "openai:AsyncStream"),
    sync_request=Target("openai._base_client", "SyncAPIClient.request"),
    async_request=Target("openai._base_client", "AsyncAPIClient.request"),
    parse=(
        Target("openai._legacy_response", "LegacyAPIResponse.parse"),
        Target("openai._response", "APIResponse.parse"),
    ),
    async_parse=(Target("openai._response", "AsyncAPIResponse.parse"),),
    public_method=Target("openai.resources.chat.completions", "Completions.create"),
    options=("include_usage",),
)

ANTHROPIC = Description(
    name="anthropic",
    requirement="anthropic >= 0.49",
    module="anthropic",
    adapter="otel_tokens.instrumentation.anthropic:AnthropicAdapter",
    streams=("anthropic:Stream", "anthropic:AsyncStream"),
    sync_request=Target("anthropic._base_client", "SyncAPIClient.request"),
    async_request=Target("anthropic._base_client", "AsyncAPIClient.request"),
    parse=(Target("anthropic._response", "APIResponse.parse"),),
    async_parse=(Target("anthropic._response", "AsyncAPIResponse.parse"),),
    # anthropic 2.x makes its own span per API call: we ride on it (one span with usage).
    library_span=LibrarySpan(
        call_started=Target("anthropic._base_client", "start_api_call_span"),
        call_finished=Target("anthropic._base_client", "finish_api_call_span"),
        stream_ended=Target("anthropic.lib._tracing._streaming", "StreamedMessage.end"),
    ),
    public_method=Target("anthropic.resources.messages", "Messages.create"),
)

GEMINI = Description(
    name="google-genai",
    requirement="google-genai >= 1.4",
    module="google.genai",
    adapter="otel_tokens.instrumentation.gemini:GeminiAdapter",
    streams=(),  # its streams are plain generators, from methods of their own:
    sync_request=Target("google.genai._api_client", "BaseApiClient.request"),
    async_request=Target("google.genai._api_client", "BaseApiClient.async_request"),
    sync_stream_request=Target("google.genai._api_client", "BaseApiClient.request_streamed"),
    async_stream_request=Target("google.genai._api_client", "BaseApiClient.async_request_streamed"),
    public_method=Target("google.genai.models", "Models.generate_content"),
)

BEDROCK = Description(
    name="botocore",
    # Older releases parse Converse's usage without the fields their service model lacks:
    # cache reads and writes (before 1.38), the 5m/1h split of the writes, cacheDetails
    # (before 1.42.31). Metered there, cache tokens would be lost or 1h writes priced at
    # the 5m rate, silently: they are not instrumented (docs/bedrock.md).
    requirement="botocore >= 1.42.31",
    module="botocore.client",
    adapter="otel_tokens.instrumentation.bedrock:BedrockAdapter",
    # A stream is a botocore EventStream inside the response dict (the adapter's stream_of),
    # watched through the raw message generator it iterates, before botocore parses them.
    streams=(),
    stream_iterator="_event_generator",
    # Every call of every botocore client (S3, DynamoDB...): the adapter returns at once for
    # any client that is not bedrock-runtime.
    sync_request=Target("botocore.client", "BaseClient._make_api_call"),
    async_request=None,  # botocore has no async client (aiobotocore is another library)
    # opentelemetry-instrumentation-botocore wraps this same method (no warning: see below).
    public_method=Target("botocore.client", "BaseClient._make_api_call"),
    # Its span carries the call instead of one of ours (_peer_span.py): found here, inside
    # both wrappers, when ours is the outer one.
    peer_inner=Target("botocore.client", "BaseClient._make_request"),
)

OLLAMA = Description(
    name="ollama",
    requirement="ollama >= 0.4",
    module="ollama",
    adapter="otel_tokens.instrumentation.ollama:OllamaAdapter",
    # Its streams are plain generators that _request returns when asked to stream; every
    # call that is not streamed passes through _request_raw (the adapter tells them apart).
    streams=(),
    sync_request=Target("ollama._client", "Client._request_raw"),
    async_request=Target("ollama._client", "AsyncClient._request_raw"),
    sync_stream_request=Target("ollama._client", "Client._request"),
    async_stream_request=Target("ollama._client", "AsyncClient._request"),
    public_method=Target("ollama._client", "Client.chat"),
)

# groq and together: SDKs of their own, generated in the shape of openai's (Stainless), read
# by the OpenAI adapter with the provider fixed (docs/openai-compatible.md).
GROQ = Description(
    name="groq",
    requirement="groq >= 0.9",
    module="groq",
    adapter="otel_tokens.instrumentation.openai:GroqAdapter",
    streams=("groq:Stream", "groq:AsyncStream"),
    sync_request=Target("groq._base_client", "SyncAPIClient.request"),
    async_request=Target("groq._base_client", "AsyncAPIClient.request"),
    parse=(Target("groq._response", "APIResponse.parse"),),
    async_parse=(Target("groq._response", "AsyncAPIResponse.parse"),),
    public_method=Target("groq.resources.chat.completions", "Completions.create"),
    options=("include_usage",),
)

TOGETHER = Description(
    name="together",
    requirement="together >= 2",
    module="together",
    adapter="otel_tokens.instrumentation.openai:TogetherAdapter",
    streams=("together:Stream", "together:AsyncStream"),
    sync_request=Target("together._base_client", "SyncAPIClient.request"),
    async_request=Target("together._base_client", "AsyncAPIClient.request"),
    parse=(Target("together._response", "APIResponse.parse"),),
    async_parse=(Target("together._response", "AsyncAPIResponse.parse"),),
    public_method=Target("together.resources.chat.completions", "CompletionsResource.create"),
    options=("include_usage",),
)

MISTRAL = Description(
    name="mistralai",
    # 2.0 moved the client to the mistralai.client package (1.x: mistralai.basesdk); before
    # 2.4.10 the client made its own spans with gen_ai.usage.* whenever the application had a
    # tracer provider (opt-in since): two spans with usage per call, so not instrumented.
    requirement="mistralai >= 2.4.10",
    module="mistralai.client",
    adapter="otel_tokens.instrumentation.mistral:MistralAdapter",
    # A stream is the httpx response do_request returns, before the client wraps it in its
    # EventStream: the adapter's stream_of puts a tap in front of its bytes, watched here.
    streams=(),
    sync_request=Target("mistralai.client.basesdk", "BaseSDK.do_request"),
    async_request=Target("mistralai.client.basesdk", "BaseSDK.do_request_async"),
    public_method=Target("mistralai.client.chat", "Chat.complete"),
)

COHERE = Description(
    name="cohere",
    requirement="cohere >= 5.13",  # tested with 5.13.0 and 7.3.1
    module="cohere",
    adapter="otel_tokens.instrumentation.cohere:CohereAdapter",
    streams=(),
    # Every non-streamed call (chat, embed, rerank, raw responses) passes through the HTTP
    # client's request; the adapter meters the v2 paths only.
    sync_request=Target("cohere.core.http_client", "HttpClient.request"),
    async_request=Target("cohere.core.http_client", "AsyncHttpClient.request"),
    # A chat stream is a plain generator (async generator) of parsed events, which sends
    # its request when first pulled.
    sync_stream_request=Target("cohere.v2.client", "V2Client.chat_stream"),
    async_stream_request=Target("cohere.v2.client", "AsyncV2Client.chat_stream"),
    public_method=Target("cohere.v2.client", "V2Client.chat"),
)
