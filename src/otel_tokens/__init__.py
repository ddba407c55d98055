"""otel-tokens: billable LLM token usage on OpenTelemetry."""
