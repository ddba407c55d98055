"""``python -m otel_tokens_fakes``: serve the OpenAI/Anthropic fake until interrupted."""

from ._provider import main

raise SystemExit(main())
