"""The framework scope in the context (see `_framework`): which framework call, if any, a
call being metered now is inside. Apart from `_framework` so that `_call` can claim it
without importing the framework machinery."""

from __future__ import annotations

from contextvars import ContextVar


class Scope:
    """One framework call in the context; `claimed` once any call is metered inside."""

    __slots__ = ("claimed", "framework")

    def __init__(self, framework: str) -> None:
        self.framework = framework
        self.claimed = False


SCOPE: ContextVar[Scope | None] = ContextVar("otel_tokens_framework_scope", default=None)


def claim() -> None:
    """A call is being metered: the framework call around it, if any, records no usage."""
    scope = SCOPE.get()
    if scope is not None:
        scope.claimed = True


def current_scope() -> Scope | None:
    return SCOPE.get()
