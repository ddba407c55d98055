"""`preflight`: a request's input tokens, context window, room for output and worst-case
cost, before it is sent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from .. import counting
from ._cache import MessageCountCache, default_cache
from ._limits import limits_of
from ._openai import Size, framing_for, messages_tokens, tools_tokens
from ._providers import count_with

if TYPE_CHECKING:
    from ..pricing import Catalog, PriceResult

CountMethod = Literal["exact", "estimated", "provider"]
"""How the input was counted: ``exact`` (a local tokenizer that is the model's own, with
the provider's published framing), ``estimated`` (a stand-in tokenizer, an approximate
formula, or four characters per token), ``provider`` (the provider's count-tokens endpoint)."""


@dataclass(frozen=True, slots=True)
class Preflight:
    """What a request will use, and can cost at most, before it is sent."""

    model: str
    provider: str | None
    input_tokens: int
    method: CountMethod
    # "tiktoken:o200k_base", "tokenizer.json:<path>", "anthropic:messages.count_tokens"
    counted_by: str
    context_window: int | None  # None: not known (see docs/preflight.md)
    # The output the request allows: its max output tokens, else the model's output limit
    # within the room left; None when neither is known.
    max_output_tokens: int | None
    room_for_output: int | None  # context window minus input; None when the window is unknown
    worst_case: PriceResult | None  # input + max output priced; None if max output unknown

    @property
    def fits(self) -> bool | None:
        """False when the input and the requested output cannot fit the context window."""
        if self.context_window is None:
            return None
        return self.input_tokens + (self.max_output_tokens or 0) <= self.context_window

    @property
    def worst_case_cost(self) -> Decimal | None:
        """The most the call can cost (exact), or None when it cannot be priced."""
        return None if self.worst_case is None else self.worst_case.total


def _is_openai_model(model: str, provider: str | None) -> bool:
    if provider not in (None, "openai", "azure.ai.openai"):
        return False
    return counting.is_openai_model(model.rsplit("/", 1)[-1])


def _count_locally(
    model: str,
    provider: str | None,
    messages: Sequence[Mapping[str, Any]] | None,
    input: Any,
    tools: Sequence[Any] | None,
    system: Any,
    cache: MessageCountCache | None,
    image_sizes: Mapping[str, Size] | None,
) -> tuple[int, CountMethod, str]:
    hf = counting.registered_tokenizer(model)
    openai = hf is None and _is_openai_model(model, provider)
    encoding = counting.encoding_name_for(model.rsplit("/", 1)[-1])
    counted_by = f"tokenizer.json:{hf}" if hf else f"tiktoken:{encoding}"
    if not counting.counts_exactly(model):
        counted_by = "heuristic:4-chars-per-token"
    encoder_model = model if hf else model.rsplit("/", 1)[-1]

    def count(text: str) -> int:
        return counting.count_text(text, encoder_model)

    exact = counting.counts_exactly(model) and (openai or hf is not None)
    total = 0
    if system is not None:
        total += count(system if isinstance(system, str) else str(system))
        exact = False  # a separate system prompt is not OpenAI's shape
    if messages is not None:
        if not openai:
            exact = False  # another model's chat template adds tokens we do not know
        n, ok = messages_tokens(messages, count, framing_for(model), counted_by, cache, image_sizes)
        total += n
        exact = exact and ok
    elif isinstance(input, str):
        total += count(input)
        exact = exact and hf is not None  # raw text through the model's own tokenizer
    elif input is not None:
        items = [i if isinstance(i, Mapping) else {"content": i} for i in input]
        n, _ = messages_tokens(items, count, framing_for(model), counted_by, cache, image_sizes)
        total += n
        exact = False  # the Responses API's framing is not published
    if tools:
        total += tools_tokens(tools, count, framing_for(model))
        exact = False  # the cookbook's formula approximates OpenAI's serialisation
    return total, ("exact" if exact else "estimated"), counted_by


def count_input(
    model: str,
    messages: Sequence[Mapping[str, Any]] | None = None,
    *,
    input: Any = None,
    tools: Sequence[Any] | None = None,
    system: Any = None,
    provider: str | None = None,
    cache: MessageCountCache | None = default_cache,
) -> tuple[int, CountMethod]:
    """A request's input tokens counted locally as `preflight` counts them, and how: no
    pricing and no network (what a budget reservation or the context-window guard needs)."""
    tokens, method, _ = _count_locally(model, provider, messages, input, tools, system, cache, None)
    return tokens, method


def preflight(
    model: str,
    messages: Sequence[Mapping[str, Any]] | None = None,
    *,
    input: Any = None,
    tools: Sequence[Any] | None = None,
    system: Any = None,
    max_output_tokens: int | None = None,
    provider: str | None = None,
    client: Any = None,
    image_sizes: Mapping[str, Size] | None = None,
    catalog: Catalog | None = None,
    cache: MessageCountCache | None = default_cache,
) -> Preflight:
    """Count a request before it is sent: its input tokens (and how they were counted), the
    model's context window, the room left for output, and the worst-case cost.

    ``messages`` (chat messages, OpenAI's shape) or ``input`` (a string, or the provider's
    own input items); ``tools`` as the client takes them; ``system`` for APIs that take the
    system prompt apart (Anthropic). ``client``: a *synchronous* anthropic, openai,
    google-genai or boto3 bedrock-runtime client, to ask the provider's free count-tokens
    endpoint instead of counting locally (opt-in: it is a network call). ``image_sizes``:
    (width, height) per image URL, for OpenAI's image tile formula. ``cache``: per-message
    counts (None: count everything again).
    """
    if not isinstance(model, str) or not model:
        raise ValueError("preflight needs the model name the request will be sent to")
    if messages is not None and input is not None:
        raise ValueError("pass messages or input, not both")
    if isinstance(messages, (str, bytes)):
        raise TypeError("messages must be a list of messages; pass a string as input=")
    if max_output_tokens is not None and (
        type(max_output_tokens) is not int or max_output_tokens < 0
    ):
        raise ValueError(f"max_output_tokens must be a non-negative int, not {max_output_tokens!r}")
    method: CountMethod
    if client is not None:
        found = count_with(
            client, model=model, messages=messages, input=input, tools=tools, system=system
        )
        n_in, method = found.input_tokens, "provider"
        counted_by = f"{found.provider}:{found.endpoint}"
        provider = provider or found.provider
    else:
        n_in, method, counted_by = _count_locally(
            model, provider, messages, input, tools, system, cache, image_sizes
        )
    limits = limits_of(model)
    window = limits.context_window if limits is not None else None
    room = None if window is None else max(0, window - n_in)
    max_out = max_output_tokens
    if max_out is None and limits is not None:
        max_out = room if limits.max_output is None else min(limits.max_output, room or 0)
    worst = None
    if max_out is not None:
        from ..pricing import default_catalog
        from ..usage import TokenUsage

        worst = (catalog or default_catalog()).price(
            TokenUsage(input=n_in, output=max_out), model, provider=provider
        )
    return Preflight(
        model=model,
        provider=provider,
        input_tokens=n_in,
        method=method,
        counted_by=counted_by,
        context_window=window,
        max_output_tokens=max_out,
        room_for_output=room,
        worst_case=worst,
    )
