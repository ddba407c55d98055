"""`fit_messages`: a conversation cut to fit a model's context window."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from .. import counting
from ._cache import MessageCountCache, default_cache, message_key
from ._errors import ContextWindowExceeded
from ._limits import limits_of
from ._openai import framing_for, message_tokens

M = TypeVar("M", bound=Mapping[str, Any])
_SYSTEM = ("system", "developer")


def fit_messages(
    messages: Sequence[M],
    model: str,
    *,
    reserve: int = 0,
    context_window: int | None = None,
    cache: MessageCountCache | None = default_cache,
) -> list[M]:
    """The newest turns of ``messages`` that fit ``model``'s context window with ``reserve``
    tokens left for output, oldest dropped first.

    System (and developer) messages and the last user message are always kept; a tool
    result is never kept without the assistant message that called it (it is dropped with
    it). Raises `ContextWindowExceeded` when even those do not fit, and ``ValueError`` when
    the model's window is unknown and ``context_window`` is not given. Messages are returned
    as given (the same objects), in their order. Counting is OpenAI's chat framing with the
    model's tokenizer (estimated for other providers' models).
    """
    if reserve < 0:
        raise ValueError("reserve must be a non-negative number of tokens")
    if context_window is None:
        limits = limits_of(model)
        if limits is None:
            raise ValueError(
                f"the context window of {model!r} is not known: pass context_window= "
                "or register it with otel_tokens.window.register_context_window"
            )
        context_window = limits.context_window
    framing = framing_for(model)
    tag = f"fit|{model}|{framing.tag}"

    def count(text: str) -> int:
        return counting.count_text(text, model)

    def tokens(message: M) -> int:
        if cache is None:
            return message_tokens(message, count, framing)[0]
        return cache.get_or_count(
            message_key(tag, message), lambda: message_tokens(message, count, framing)
        )[0]

    budget = context_window - reserve - framing.reply_priming
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    keep = [m.get("role") in _SYSTEM or i == last_user for i, m in enumerate(messages)]
    sizes = [tokens(m) for m in messages]
    used = sum(n for n, k in zip(sizes, keep, strict=True) if k)
    if used > budget:
        raise ContextWindowExceeded(
            model=model,
            input_tokens=used + framing.reply_priming,
            max_output_tokens=reserve,
            context_window=context_window,
            detail="the system prompt and the last user message alone do not fit",
        )
    # Newest first: take whole turns (a tool result goes with the call that asked for it).
    for i in range(len(messages) - 1, -1, -1):
        if keep[i]:
            continue
        if messages[i].get("role") == "tool":
            continue  # decided with its assistant message below
        group = [i]
        j = i + 1
        while j < len(messages) and messages[j].get("role") == "tool" and not keep[j]:
            group.append(j)
            j += 1
        cost = sum(sizes[k] for k in group)
        if used + cost > budget:
            break  # an older turn kept after a dropped newer one would reorder the story
        used += cost
        for k in group:
            keep[k] = True
    return [m for m, k in zip(messages, keep, strict=True) if k]
