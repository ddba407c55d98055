"""Offline demo helpers: a local server that speaks the OpenAI and Anthropic wire formats.

See :mod:`otel_tokens.demo.server`.
"""
