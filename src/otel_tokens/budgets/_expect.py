"""What a block of calls (an agent workflow, one request of a service) may use in total.

A call's own pre-flight check only knows that call. A workflow of several calls whose
budget can pay for the first but not the last would send (and bill) the first calls and
then be refused halfway, its work wasted. Inside ``with expect(tokens=N)`` the first call
is refused, before anything is sent, unless every enforced budget it draws on has N left.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType

from ._model import NANO, Budget


@dataclass(slots=True)
class _Block:
    tokens: int | None
    cost: Decimal | None
    claimed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """True for the first call of the block (the one checked for the whole block)."""
        with self.lock:
            first, self.claimed = not self.claimed, True
            return first

    def units(self, budget: Budget) -> int:
        """The block's declared maximum in ``budget``'s store units (0 when it declares none
        in that unit)."""
        if budget.in_tokens:
            return self.tokens or 0
        if self.cost is None:
            return 0
        return int((self.cost * NANO).to_integral_value())


_CURRENT: ContextVar[_Block | None] = ContextVar("otel_tokens_budget_block", default=None)


def current_block() -> _Block | None:
    return _CURRENT.get()


class expect:  # lower case: used like a function, ``with budgets.expect(tokens=...)``
    """Declare the most the calls in this block may use together, so that a block its
    enforced budgets cannot pay for is refused at its first call, before anything is sent.

    ``tokens``: the block's maximum for token budgets (input and output of all its calls);
    ``cost``: its maximum for currency budgets, in the budget's currency. The first call
    reserves ``max(its own maximum, the block's)``; when it ends, the reservation settles
    to its real usage, and each later call reserves its own maximum as usual (so another
    process may still take the balance in between: this stops a block that cannot be
    paid for from starting, it does not hold the balance for the whole block).
    """

    __slots__ = ("_block", "_token")

    def __init__(self, *, tokens: int | None = None, cost: Decimal | str | None = None) -> None:
        if tokens is not None and (type(tokens) is not int or tokens < 0):
            raise ValueError(f"tokens must be a non-negative integer, got {tokens!r}")
        amount = None if cost is None else Decimal(cost)
        if amount is not None and not (amount.is_finite() and amount >= 0):
            raise ValueError(f"cost must be a finite, non-negative amount, got {cost!r}")
        self._block = _Block(tokens, amount)
        self._token: Token[_Block | None] | None = None

    def __enter__(self) -> expect:
        self._token = _CURRENT.set(self._block)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None
