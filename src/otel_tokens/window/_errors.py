"""`ContextWindowExceeded`: a request that cannot fit its model's context window."""

from __future__ import annotations


class ContextWindowExceeded(Exception):
    """The request's input tokens plus the output it asks for exceed the model's context
    window. Raised before the request is sent (``context_guard="raise"``) or by
    `fit_messages`; nothing was sent or billed."""

    def __init__(
        self,
        *,
        model: str | None,
        input_tokens: int,
        max_output_tokens: int | None,
        context_window: int,
        detail: str | None = None,
    ) -> None:
        self.model = model
        self.input_tokens = input_tokens
        self.max_output_tokens = max_output_tokens
        self.context_window = context_window
        out = max_output_tokens or 0
        message = (
            f"request to {model!r} needs {input_tokens + out} tokens ({input_tokens} input"
            f" + {out} max output) but its context window is {context_window}"
        )
        super().__init__(f"{message}: {detail}" if detail else message)
