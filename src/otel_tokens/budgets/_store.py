"""Budget balances: in-process (default) or Redis (shared by many processes and hosts).

A store holds one integer per account (a budget period, or one top-up of a pool): what has
been used of it. `reserve` is atomic across every account of every budget a call draws on:
all the draws fit and are taken, or nothing changes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Draw:
    """Take ``amount`` from ``accounts`` ((key, capacity), in order of use)."""

    accounts: tuple[tuple[str, int], ...]
    amount: int


class Shortfall(Exception):
    def __init__(self, index: int, available: int) -> None:
        self.index = index
        self.available = available


class StoreError(RuntimeError):
    """The store cannot be reached."""


class Store(Protocol):
    """Where budgets keep their used amounts: `MemoryStore` (one process) or `RedisStore`."""

    def reserve(self, draws: Sequence[Draw], force: bool = False) -> list[list[int]]:
        """Take every draw or none; raise `Shortfall` naming the first that does not fit.

        ``force``: usage that already happened: take it all, what does not fit in the
        accounts' remaining capacity going to the last account.
        """

    def add(self, deltas: Sequence[tuple[str, int]]) -> None:
        """Adjust used amounts (settlement, refunds, observed usage); may exceed capacity."""

    def used(self, keys: Sequence[str]) -> list[int]: ...

    def seed(self, values: Sequence[tuple[str, int]]) -> None:
        """Set each account the store does not hold yet (a new process's memory, a new
        Redis) to ``used``; an account it holds is never changed."""


def _allocate(draw: Draw, used: Sequence[int], force: bool) -> tuple[list[int], int]:
    remaining = draw.amount
    takes = []
    for (_, capacity), spent in zip(draw.accounts, used, strict=True):
        take = min(max(capacity - spent, 0), remaining)
        takes.append(take)
        remaining -= take
    if force and remaining and takes:
        takes[-1] += remaining
        remaining = 0
    return takes, draw.amount - remaining


class MemoryStore:
    """Balances in this process (threads share them); lost at exit."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    def reserve(self, draws: Sequence[Draw], force: bool = False) -> list[list[int]]:
        with self._lock:
            plan = []
            for i, draw in enumerate(draws):
                used = [self._used.get(k, 0) for k, _ in draw.accounts]
                takes, got = _allocate(draw, used, force)
                if got < draw.amount:
                    raise Shortfall(i, got)
                plan.append(takes)
            for draw, takes in zip(draws, plan, strict=True):
                for (key, _), take in zip(draw.accounts, takes, strict=True):
                    if take:
                        self._used[key] = self._used.get(key, 0) + take
            return plan

    def add(self, deltas: Sequence[tuple[str, int]]) -> None:
        with self._lock:
            for key, delta in deltas:
                self._used[key] = self._used.get(key, 0) + delta

    def used(self, keys: Sequence[str]) -> list[int]:
        with self._lock:
            return [self._used.get(k, 0) for k in keys]

    def seed(self, values: Sequence[tuple[str, int]]) -> None:
        with self._lock:
            for key, used in values:
                self._used.setdefault(key, used)


# KEYS: every account of every draw, in order. ARGV: force (0/1), number of draws, then for
# each draw: its number of accounts, its amount, then the capacities of its accounts.
_RESERVE = """
local force = tonumber(ARGV[1]) == 1
local ndraws = tonumber(ARGV[2])
local pos, kpos = 3, 1
local plan = {}
for d = 1, ndraws do
  local naccounts = tonumber(ARGV[pos]); local amount = tonumber(ARGV[pos + 1]); pos = pos + 2
  local remaining = amount
  for a = 1, naccounts do
    local cap = tonumber(ARGV[pos + a - 1])
    local used = tonumber(redis.call('GET', KEYS[kpos + a - 1]) or '0')
    local avail = cap - used
    if avail < 0 then avail = 0 end
    local take = math.min(avail, remaining)
    plan[#plan + 1] = take
    remaining = remaining - take
  end
  if remaining > 0 and force and naccounts > 0 then
    plan[#plan] = plan[#plan] + remaining
    remaining = 0
  end
  if remaining > 0 then return {-1, d - 1, amount - remaining} end
  pos = pos + naccounts; kpos = kpos + naccounts
end
for i = 1, #plan do
  if plan[i] > 0 then redis.call('INCRBY', KEYS[i], plan[i]) end
end
plan[#plan + 1] = 0
return plan
"""


class RedisStore:
    """Balances in Redis: atomic (one Lua script per reservation) across processes and hosts.

    Keys share one hash tag, so the script also works on Redis Cluster.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "otel_tokens") -> None:
        try:
            import redis
        except ImportError as exc:
            raise StoreError(
                "the Redis budget store needs redis: pip install 'otel-tokens[redis]'"
            ) from exc
        self._redis: Any = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._prefix = "{" + prefix + "}:budget:"
        self._script = self._redis.register_script(_RESERVE)

    def _key(self, key: str) -> str:
        return self._prefix + key

    def reserve(self, draws: Sequence[Draw], force: bool = False) -> list[list[int]]:
        keys = [self._key(k) for d in draws for k, _ in d.accounts]
        args: list[int] = [int(force), len(draws)]
        for d in draws:
            args += [len(d.accounts), d.amount, *(cap for _, cap in d.accounts)]
        try:
            reply = self._script(keys=keys, args=args)
        except self._errors as exc:
            raise StoreError(str(exc)) from exc
        values = [int(v) for v in reply]
        if values and values[0] == -1:
            raise Shortfall(values[1], values[2])
        plan, pos = [], 0
        for d in draws:
            plan.append(values[pos : pos + len(d.accounts)])
            pos += len(d.accounts)
        return plan

    def add(self, deltas: Sequence[tuple[str, int]]) -> None:
        try:
            pipe = self._redis.pipeline(transaction=True)
            for key, delta in deltas:
                if delta:
                    pipe.incrby(self._key(key), delta)
            pipe.execute()
        except self._errors as exc:
            raise StoreError(str(exc)) from exc

    def used(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        try:
            values = self._redis.mget([self._key(k) for k in keys])
        except self._errors as exc:
            raise StoreError(str(exc)) from exc
        return [int(v) if v is not None else 0 for v in values]

    def seed(self, values: Sequence[tuple[str, int]]) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, used in values:
                pipe.set(self._key(key), used, nx=True)
            pipe.execute()
        except self._errors as exc:
            raise StoreError(str(exc)) from exc


def open_store(url: str | None) -> Store:
    """``memory`` (default) or ``redis://host:port/db``."""
    if not url or url == "memory":
        return MemoryStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    raise ValueError(f"unsupported budget store {url!r}: use memory or redis://host:port/db")
