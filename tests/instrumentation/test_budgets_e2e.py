"""Budgets through the real ``openai`` client and the bundled server: enforcement before the
request is sent, settlement to the real usage, observe mode, pools, Redis (up and down), and
budgets declared in ``OTEL_TOKENS_BUDGETS``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from _services import REDIS_URL
from otel_tokens import semconv as sc
from otel_tokens.attribution import attribute
from otel_tokens.budgets import (
    ENV_BUDGET_STORE,
    ENV_BUDGETS,
    Budget,
    BudgetExceeded,
    BudgetManager,
    BudgetUnavailable,
    MemoryStore,
    RedisStore,
    TopUp,
)
from otel_tokens.budgets._manager import _nano
from otel_tokens.instrumentation import OpenAIInstrumentor
from otel_tokens.pricing import Catalog
from otel_tokens_fakes import ProviderServer

from ._asserts import instrumenter
from .conftest import Telemetry

D = Decimal
MODEL = "gpt-4o-mini"
CONTENT = "Hello there, how are you today?"
MESSAGES: list[Any] = [{"role": "user", "content": CONTENT}]
DOWN_URL = "redis://127.0.0.1:1/0"


def o200k(text: str) -> int:
    import tiktoken

    return len(tiktoken.get_encoding("o200k_base").encode(text))


def estimated_input() -> int:
    """The local count a preflight check makes: OpenAI's chat format, counted with tiktoken."""
    return 3 + 3 + o200k("user") + o200k(CONTENT)


class Setup:
    def __init__(self, telemetry: Telemetry, server: ProviderServer) -> None:
        self.telemetry = telemetry
        self.server = server
        self.manager: BudgetManager | None = None

    def budgets(self, *budgets: Budget, store: Any = None, **kw: Any) -> BudgetManager:
        self.manager = BudgetManager(
            budgets,
            store if store is not None else MemoryStore(),
            catalog=Catalog(),
            meter_provider=self.telemetry.meter_provider,
            **kw,
        )
        return self.manager

    def used(self, budget: Budget) -> int:
        m = self.manager
        assert m is not None
        return sum(m.store.used([k for k, _ in m.accounts(budget, m.clock())]))

    def spans(self) -> list[ReadableSpan]:
        return [
            s for s in self.telemetry.finished() if s.instrumentation_scope.name == "otel_tokens"
        ]

    def requests(self) -> int:
        return len(self.server.requests)


@pytest.fixture
def setup(
    telemetry: Telemetry, server: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Setup]:
    monkeypatch.delenv(ENV_BUDGETS, raising=False)
    monkeypatch.delenv(ENV_BUDGET_STORE, raising=False)
    yield Setup(telemetry, server)


@pytest.fixture
def instrument(setup: Setup) -> Iterator[Callable[..., OpenAIInstrumentor]]:
    """instrument(): instrument with our providers and the budgets declared in `setup`."""
    with instrumenter(OpenAIInstrumentor(), setup.telemetry) as instrument:

        def do() -> OpenAIInstrumentor:
            budgets = {} if setup.manager is None else {"budgets": setup.manager}
            return cast(OpenAIInstrumentor, instrument(**budgets))

        yield do


@pytest.fixture
def client(server: ProviderServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="test", base_url=server.openai_base_url, max_retries=0) as c:
        yield c


def chat(client: openai.OpenAI, **kw: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, **kw)


def total_tokens(response: Any) -> int:
    return int(response.usage.prompt_tokens + response.usage.completion_tokens)


def tokens(name: str = "b", limit: int = 10_000, **kw: Any) -> Budget:
    kw.setdefault("mode", "enforce")
    kw.setdefault("scope", {"tenant": "acme"})
    return Budget(name, limit=D(limit), unit="tokens", **kw)


# --- enforce -------------------------------------------------------------------------------------
def test_enforce_refuses_before_the_request_is_sent(
    setup: Setup, instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI
) -> None:
    b = tokens("acme-tokens", limit=1000)
    setup.budgets(b)
    instrument()
    before = setup.requests()
    with attribute(tenant="acme"), pytest.raises(BudgetExceeded) as info:
        chat(client)  # no max_tokens: up to gpt-4o-mini's 16,384 output tokens (pre-flight)
    assert setup.requests() == before  # nothing reached the server
    needed = estimated_input() + 16_384
    assert (info.value.budget, info.value.needed, info.value.available) == (
        "acme-tokens",
        needed,
        1000,
    )
    assert str(info.value) == (
        f"budget 'acme-tokens' would be exceeded: this call may use up to {needed:,} tokens "
        "and 1,000 tokens remain"
    )
    assert setup.used(b) == 0
    # The refused call has its span, marked as an error, attributed, without usage.
    (span,) = setup.spans()
    attrs = dict(span.attributes or {})
    assert attrs[sc.ERROR_TYPE] == "BudgetExceeded"
    assert span.status.status_code is StatusCode.ERROR
    assert attrs[sc.BILLING_TENANT_ID] == "acme"
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in attrs
    assert setup.telemetry.points(sc.METRIC_BILLING_TOKENS) == []
    # Calls out of the budget's scope are not limited.
    with attribute(tenant="globex"):
        chat(client)
    assert setup.requests() == before + 1


def test_max_tokens_bounds_the_reservation(
    setup: Setup, instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI
) -> None:
    b = tokens(limit=estimated_input() + 50)
    setup.budgets(b)
    instrument()
    before = setup.requests()
    with attribute(tenant="acme"):
        with pytest.raises(BudgetExceeded) as info:
            chat(client, max_tokens=51)
        assert info.value.needed == estimated_input() + 51
        assert setup.requests() == before
        response = chat(client, max_completion_tokens=50)  # exactly what is left
    assert setup.requests() == before + 1
    assert setup.used(b) == total_tokens(response)


def test_reservation_is_settled_to_the_actual_usage(
    setup: Setup, instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI
) -> None:
    b = tokens(limit=10_000)
    m = setup.budgets(b)
    instrument()
    with attribute(tenant="acme"):
        first = chat(client, max_tokens=500)
        second = chat(client, max_tokens=500, extra_headers={"x-test-output-tokens": "40"})
    assert second.usage.completion_tokens == 40
    spent = total_tokens(first) + total_tokens(second)
    assert setup.used(b) == spent
    (row,) = m.status()
    assert row["remaining"] == 10_000 - spent


def test_async_client_is_refused_before_sending_too(
    setup: Setup, instrument: Callable[..., OpenAIInstrumentor], server: ProviderServer
) -> None:
    b = tokens(limit=100)
    setup.budgets(b)
    instrument()
    before = setup.requests()

    async def main() -> None:
        async with openai.AsyncOpenAI(
            api_key="test", base_url=server.openai_base_url, max_retries=0
        ) as c:
            with attribute(tenant="acme"):
                await c.chat.completions.create(model=MODEL, messages=MESSAGES)

    with pytest.raises(BudgetExceeded):
        asyncio.run(main())
    assert setup.requests() == before


def test_a_stream_holds_its_reservation_until_it_ends(
    setup: Setup, instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI
) -> None:
    b = tokens(limit=10_000)
    setup.budgets(b)
    instrument()
    with attribute(tenant="acme"):
        stream = chat(client, max_tokens=300, stream=True, stream_options={"include_usage": True})
        assert setup.used(b) == estimated_input() + 300  # held while streaming
        chunks = list(stream)
    usage = chunks[-1].usage
    assert setup.used(b) == usage.prompt_tokens + usage.completion_tokens


def test_a_failed_call_releases_its_reservation(
    setup: Setup, instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI
) -> None:
    b = tokens(limit=10_000)
    setup.budgets(b)
    instrument()
    with attribute(tenant="acme"), pytest.raises(openai.InternalServerError):
        chat(client, max_tokens=300, extra_headers={"x-test-scenario": "server_error"})
    assert setup.used(b) == 0


def test_currency_budget_settles_to_the_exact_cost(
    setup: Setup, instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI
) -> None:
    b = Budget("usd", limit=D("0.01"), unit="USD", mode="enforce", scope={"feature": "chat"})
    m = setup.budgets(b)
    instrument()
    with attribute(feature="chat"):
        chat(client, max_tokens=100)
        chat(client, max_tokens=100)
    costs = [D(str((s.attributes or {})[sc.BILLING_COST_DECIMAL])) for s in setup.spans()]
    assert len(costs) == 2
    assert setup.used(b) == sum(_nano(c) for c in costs)
    (row,) = m.status()
    assert row["remaining"] == D("0.01") - sum(costs, D(0))  # whole nano-dollars here


def test_currency_budget_refuses_a_call_whose_maximum_cost_does_not_fit(
    setup: Setup, instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI
) -> None:
    b = Budget("usd", limit=D("0.002"), unit="USD", mode="enforce")
    setup.budgets(b)
    instrument()
    before = setup.requests()
    with pytest.raises(BudgetExceeded) as info:
        chat(client)  # up to 16,384 output tokens at $0.6/MTok: more than $0.002
    assert setup.requests() == before
    expected = (D(estimated_input()) * D("0.15") + D(16_384) * D("0.6")) / 1_000_000
    assert (info.value.unit, info.value.needed) == ("USD", _nano(expected))
    assert f"may use up to {expected} USD and 0.002 USD remain" in str(info.value)
    chat(client, max_tokens=100)  # a bounded call fits
    assert setup.requests() == before + 1
    assert setup.used(b) > 0


def test_tag_scoped_prepaid_pool(
    setup: Setup, instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI
) -> None:
    now = datetime.now(UTC)
    expiring = TopUp(D(60), datetime(2020, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    forever = TopUp(D(1000), datetime(2020, 1, 1, tzinfo=UTC))
    b = Budget(
        "pro-credit",
        unit="tokens",
        period="pool",
        mode="enforce",
        scope={"tag.plan": "pro"},
        top_ups=(forever, expiring),
    )
    m = setup.budgets(b)
    instrument()
    with attribute(tenant="acme", plan="pro"):
        response = chat(client, max_tokens=50)
    with attribute(tenant="acme", plan="free"):
        chat(client)  # another plan: not drawn on
    spent = total_tokens(response)
    assert spent < 60
    assert m.store.used(b.top_up_keys()) == [0, spent]  # the expiring credit first
    assert m.accounts(b, now)[0][0] == b.top_up_keys()[1]
    with attribute(plan="pro"), pytest.raises(BudgetExceeded) as info:
        chat(client, max_tokens=1060 - spent)
    assert info.value.available == 1060 - spent


# --- observe -------------------------------------------------------------------------------------
def test_observe_mode_never_blocks_and_reports(
    setup: Setup,
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    b = tokens("watch", limit=100, mode="observe")
    setup.budgets(b)
    instrument()
    caplog.set_level(logging.WARNING, logger="otel_tokens.budgets")
    before = setup.requests()
    with attribute(tenant="acme"):
        responses = [chat(client, max_tokens=10_000) for _ in range(8)]
    assert setup.requests() == before + 8  # never refused
    per_call = total_tokens(responses[0])
    assert setup.used(b) == 8 * per_call > 100
    thresholds = [r.threshold for r in caplog.records if hasattr(r, "threshold")]  # type: ignore[attr-defined]
    assert thresholds == [50, 80, 100]
    crossings = {
        p.attributes[sc.BILLING_BUDGET_THRESHOLD]: p.value
        for p in setup.telemetry.points(sc.METRIC_BUDGET_THRESHOLD_CROSSINGS)
    }
    assert crossings == {50: 1, 80: 1, 100: 1}
    gauges = {
        name: {p.attributes[sc.BILLING_BUDGET_NAME]: p.value for p in setup.telemetry.points(name)}
        for name in (sc.METRIC_BUDGET_USED, sc.METRIC_BUDGET_LIMIT)
    }
    assert gauges == {
        sc.METRIC_BUDGET_USED: {"watch": 8 * per_call},
        sc.METRIC_BUDGET_LIMIT: {"watch": 100},
    }
    assert setup.telemetry.points(sc.METRIC_BUDGET_SPEND_RATE)[0].value > 0
    assert setup.telemetry.points(sc.METRIC_BUDGET_PROJECTED)[0].value >= 8 * per_call


# --- Redis ---------------------------------------------------------------------------------------
def test_redis_store(
    setup: Setup,
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    redis_prefix: str,
) -> None:
    b = tokens(limit=estimated_input() + 400)
    setup.budgets(b, store=RedisStore(REDIS_URL, prefix=redis_prefix))
    instrument()
    with attribute(tenant="acme"):
        response = chat(client, max_tokens=200)
        spent = total_tokens(response)
        before = setup.requests()
        with pytest.raises(BudgetExceeded):
            chat(client, max_tokens=401 - spent)
        assert setup.requests() == before
    assert setup.used(b) == spent


def test_redis_down_fails_open(
    setup: Setup,
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    setup.budgets(tokens(limit=10), store=RedisStore(DOWN_URL))
    instrument()
    caplog.set_level(logging.WARNING, logger="otel_tokens.budgets")
    before = setup.requests()
    with attribute(tenant="acme"):
        response = chat(client)  # would be refused if the store answered
    assert response.choices[0].message.content
    assert setup.requests() == before + 1
    assert "budget store unreachable" in caplog.text
    assert "failing open" in caplog.text
    (span,) = setup.spans()
    assert sc.ERROR_TYPE not in (span.attributes or {})  # metered as usual
    assert (span.attributes or {})[sc.GEN_AI_USAGE_INPUT_TOKENS] == response.usage.prompt_tokens


def test_redis_down_fails_closed_when_configured(
    setup: Setup, instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI
) -> None:
    setup.budgets(tokens("strict", limit=10_000, fail_closed=True), store=RedisStore(DOWN_URL))
    instrument()
    before = setup.requests()
    with attribute(tenant="acme"), pytest.raises(BudgetUnavailable) as info:
        chat(client)
    assert setup.requests() == before
    assert "budget 'strict' cannot be checked" in str(info.value)
    (span,) = setup.spans()
    assert (span.attributes or {})[sc.ERROR_TYPE] == "BudgetUnavailable"


# --- budgets declared in OTEL_TOKENS_BUDGETS -----------------------------------------------------
def test_budgets_from_the_environment(
    setup: Setup,
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text(
        "budgets:\n"
        "  - {name: acme, scope: {tenant: acme, model: gpt-4o-mini}, limit: 1000,\n"
        "     unit: tokens, period: daily, mode: enforce}\n"
    )
    monkeypatch.setenv(ENV_BUDGETS, str(path))
    instrument()  # no budgets= : the manager comes from the environment
    before = setup.requests()
    with attribute(tenant="acme"):
        chat(client, max_tokens=100)
        with pytest.raises(BudgetExceeded, match="budget 'acme' would be exceeded"):
            chat(client)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # other model
    assert setup.requests() == before + 2
