"""The offline side of ``otel-tokens demo``: when no provider key is set, start the fake
provider servers (``otel_tokens_fakes``, test support that lives beside this package in a
clone, not in the wheel) and point the demo's clients at them through the environment
variables each client library reads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

# A key for any provider means the demo calls the real APIs (only those configured).
KEY_VARIABLES = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "AWS_BEARER_TOKEN_BEDROCK",
    "DEMO_BEDROCK",  # Bedrock with the AWS credentials already configured (a profile, SSO...)
)
FAKES_MISSING = (
    "the offline demo needs the fake provider servers (the otel_tokens_fakes package), which "
    "are test support in a clone of otel-tokens, not in the installed wheel: run "
    "`pip install -e '.[demo]'` in a clone, or set a provider's key ({keys}) to call the real "
    "APIs"
)


class FakesMissingError(RuntimeError):
    """``otel_tokens_fakes`` cannot be imported (a wheel install, not a clone)."""


@dataclass(frozen=True)
class OfflineProviders:
    url: str
    """The OpenAI/Anthropic fake's address, for the banner."""
    environment: dict[str, str]
    """What points each client library at its fake."""


def wants_offline(environ: Mapping[str, str]) -> bool:
    """No provider key is set: the demo calls the fakes, all of them."""
    return not any(environ.get(name) for name in KEY_VARIABLES)


@contextlib.contextmanager
def offline_providers(port: int = 0) -> Iterator[OfflineProviders]:
    """The fakes of all four wire formats, serving until the block ends."""
    try:
        import otel_tokens_fakes as fakes
    except ImportError as error:
        raise FakesMissingError(FAKES_MISSING.format(keys=", ".join(KEY_VARIABLES))) from error
    with (
        fakes.ProviderServer(port=port, scenario="cache", stream_delay=0.01) as provider,
        fakes.GeminiServer() as gemini,
        fakes.BedrockServer() as bedrock,
    ):
        environment = {
            "OPENAI_API_KEY": "demo-key",
            "ANTHROPIC_API_KEY": "demo-key",
            "OPENAI_BASE_URL": provider.openai_base_url,
            "ANTHROPIC_BASE_URL": provider.anthropic_base_url,
            # google-genai: the Gemini Developer API, at its base-URL override.
            "GEMINI_API_KEY": "demo-key",
            "GOOGLE_GENAI_USE_VERTEXAI": "false",
            "GOOGLE_GEMINI_BASE_URL": gemini.base_url,
            # boto3: credentials (botocore sends a Bedrock API key, a bearer token, over HTTPS
            # only) and the service-specific endpoint override.
            "DEMO_BEDROCK": "1",
            "AWS_ACCESS_KEY_ID": "demo-key",
            "AWS_SECRET_ACCESS_KEY": "demo-secret",
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock.endpoint_url,
        }
        yield OfflineProviders(provider.url, environment)
