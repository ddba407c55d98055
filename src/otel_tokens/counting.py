"""Local token counting, for when a provider does not report usage.

Everything counted here is an *estimate* and is recorded with usage source
``estimated`` (``estimated_heuristic`` when no tokenizer could be loaded, see
`estimate_source`). OpenAI models use tiktoken (``o200k_base`` for gpt-4o, gpt-4.1, gpt-5 and the
o-series, ``cl100k_base`` for older models); other models use a registered Hugging Face
``tokenizer.json`` when one matches, else ``o200k_base`` as a close stand-in.

Both OpenAI encodings ship with the package (``_encodings/``, gzipped, byte-identical to
tiktoken's downloads) and are built from there, each file checked against tiktoken's own
sha256: counting is exact with no network and no ``TIKTOKEN_CACHE_DIR``. Only when an encoding
cannot be loaded (a damaged install, an unreadable tokenizer.json) does counting fall back to
four characters per token; that is logged as an error, and `counts_exactly` says so.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from . import _encodings

if TYPE_CHECKING:
    from .usage import UsageSource

_log = logging.getLogger(__name__)

_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "text-embedding-3", "text-embedding-ada", "gpt-4")
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")

# OpenAI's published chat format overhead: every message is wrapped in a few tokens, and
# the reply is primed with three.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3


class _Encoder(Protocol):
    def encode(self, text: str) -> Any: ...


_registered: list[tuple[str, str]] = []
_registered_lock = threading.Lock()


def register_tokenizer(model_pattern: str, tokenizer_json: str) -> None:
    """Count tokens of models matching ``model_pattern`` (a glob) with a local tokenizer.json.

    For self-hosted models: the file is read from disk, never from a hub.
    """
    with _registered_lock:
        _registered.insert(0, (model_pattern.lower(), tokenizer_json))
    _hf_tokenizer.cache_clear()
    encoder_for.cache_clear()


def registered_tokenizer(model: str | None) -> str | None:
    """The tokenizer.json registered for ``model`` (`register_tokenizer`), if any."""
    name = (model or "").lower()
    with _registered_lock:
        registered = list(_registered)
    return next((path for pattern, path in registered if fnmatch.fnmatchcase(name, pattern)), None)


def is_openai_model(model: str | None) -> bool:
    """True for the OpenAI models tiktoken counts exactly (the gpt and o-series names)."""
    return (model or "").lower().startswith(_O200K_PREFIXES + _CL100K_PREFIXES)


def encoding_name_for(model: str | None) -> str:
    name = (model or "").lower()
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


@lru_cache(maxsize=4)
def _tiktoken(name: str) -> _Encoder | None:
    try:
        return _encodings.load(name)
    except Exception as exc:  # a damaged install: count, but say loudly that it is a guess
        _log.error(
            "otel-tokens: the bundled tiktoken encoding %s cannot be loaded (%s); estimated "
            "token counts use 4 characters per token until it is reinstalled.",
            name,
            exc,
        )
        return None


@lru_cache(maxsize=16)
def _hf_tokenizer(path: str) -> _Encoder | None:
    try:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(path)
    except Exception as exc:
        _log.error(
            "otel-tokens: cannot load tokenizer %s (%s); its models are counted at 4 "
            "characters per token",
            path,
            exc,
        )
        return None


@lru_cache(maxsize=256)
def encoder_for(model: str | None) -> _Encoder | None:
    name = (model or "").lower()
    with _registered_lock:
        registered = list(_registered)
    for pattern, path in registered:
        if fnmatch.fnmatchcase(name, pattern):
            return _hf_tokenizer(path)
    return _tiktoken(encoding_name_for(model))


def counts_exactly(model: str | None = None) -> bool:
    """True when ``model``'s tokens are counted with a real tokenizer, False when no tokenizer
    could be loaded and counts are four characters per token."""
    return encoder_for(model) is not None


def estimate_source(model: str | None = None) -> UsageSource:
    """The usage source of tokens counted here for ``model``: ``estimated`` with a real
    tokenizer, ``estimated_heuristic`` at four characters per token (so a guess is never
    recorded as if it had been counted)."""
    return "estimated" if counts_exactly(model) else "estimated_heuristic"


def count_text(text: str, model: str | None = None) -> int:
    """Estimated tokens in ``text`` for ``model``."""
    if not text:
        return 0
    encoder = encoder_for(model)
    if encoder is None:
        return max(1, (len(text) + 3) // 4)
    # tiktoken: encode_ordinary, because a provider bills text that looks like a special
    # token ("<|endoftext|>" in a user's message) as plain text, and encode() raises on it.
    ordinary = getattr(encoder, "encode_ordinary", None)
    if ordinary is not None:
        return len(ordinary(text))
    encoded = encoder.encode(text)
    ids = getattr(encoded, "ids", encoded)  # tokenizers returns an Encoding
    return len(ids)


def _content_text(content: Any) -> Iterable[str]:
    if content is None:
        return
    if isinstance(content, str):
        yield content
        return
    if isinstance(content, Mapping):
        for key in ("text", "input_text", "content"):
            value = content.get(key)
            if isinstance(value, str):
                yield value
            elif isinstance(value, list):
                yield from _content_text(value)
        return
    if isinstance(content, Iterable):
        for part in content:
            yield from _content_text(part)


def count_messages(messages: Any, model: str | None = None) -> int:
    """Estimated input tokens of a chat request's ``messages`` (OpenAI's chat format)."""
    total = _REPLY_PRIMING
    if isinstance(messages, str):
        return total + count_text(messages, model)
    for message in messages or ():
        if not isinstance(message, Mapping):
            continue
        total += _TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "name":
                total += _TOKENS_PER_NAME
            if key in ("content", "role", "name"):
                total += sum(count_text(t, model) for t in _content_text(value))
    return total


_TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
TIKTOKEN_ENCODINGS = _encodings.NAMES


def install_tiktoken_files(source_dir: str | None, cache_dir: str) -> list[str]:
    """Put ``<name>.tiktoken`` files into a ``TIKTOKEN_CACHE_DIR``, for other code that calls
    ``tiktoken.get_encoding`` offline (otel-tokens itself needs none of this).

    ``source_dir``: a folder of ``<name>.tiktoken`` files, or ``None`` for the encodings
    shipped with otel-tokens. tiktoken looks up each encoding under the sha1 of its download
    URL; this names the files that way, so unmodified tiktoken works without network.
    Returns the encodings installed.
    """
    import hashlib
    from pathlib import Path

    dst = Path(cache_dir)
    dst.mkdir(parents=True, exist_ok=True)
    installed = []
    for name in TIKTOKEN_ENCODINGS:
        key = hashlib.sha1(_TIKTOKEN_URL.format(name=name).encode()).hexdigest()
        target = dst / key
        if source_dir is None:
            data = _encodings.rank_file(name)
        else:
            file = Path(source_dir) / f"{name}.tiktoken"
            if not file.is_file():
                continue
            data = file.read_bytes()
        if not target.exists():
            target.write_bytes(data)
        installed.append(name)
    return installed
