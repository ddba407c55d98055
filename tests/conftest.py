"""Suite-wide fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from otel_tokens.counting import install_tiktoken_files


@pytest.fixture(scope="session", autouse=True)
def _tiktoken_oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests check our local counts against unmodified ``tiktoken.get_encoding``, which
    downloads its encodings; with no network, give it the encodings the package ships (the
    same bytes, verified by sha256) through its own cache folder. otel-tokens itself does not
    use this folder (tests/test_counting.py proves counting needs none)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        yield
        return
    cache = tmp_path_factory.mktemp("tiktoken")
    install_tiktoken_files(None, str(cache))
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        yield
    finally:
        del os.environ["TIKTOKEN_CACHE_DIR"]
