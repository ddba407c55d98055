"""The OpenAI tiktoken encodings the product counts with, shipped with the package.

``<name>.tiktoken.gz`` beside this file is tiktoken's own rank file for that encoding,
byte-identical to what tiktoken downloads (gzip only shrinks it: 5.3 MB to 2.5 MB). Each is
checked against the sha256 tiktoken itself expects (``expected_hash`` in
``tiktoken_ext/openai_public.py``) and built into a ``tiktoken.Encoding`` here, with the
pattern and special tokens of that encoding, so no network and no ``TIKTOKEN_CACHE_DIR`` is
needed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True, slots=True)
class _Spec:
    sha256: str
    pat_str: str
    special_tokens: tuple[tuple[str, int], ...]


# Copied from tiktoken_ext/openai_public.py (tiktoken 0.8 to 0.14 agree): the pattern and
# special tokens belong to the encoding, not to a tiktoken release.
_SPECS = {
    "o200k_base": _Spec(
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens=((_ENDOFTEXT, 199999), (_ENDOFPROMPT, 200018)),
    ),
    "cl100k_base": _Spec(
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
            r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        special_tokens=(
            (_ENDOFTEXT, 100257),
            (_FIM_PREFIX, 100258),
            (_FIM_MIDDLE, 100259),
            (_FIM_SUFFIX, 100260),
            (_ENDOFPROMPT, 100276),
        ),
    ),
}

NAMES = tuple(_SPECS)


class EncodingError(RuntimeError):
    """A bundled encoding is missing or damaged (the install is incomplete or altered)."""


def _spec(name: str) -> _Spec:
    spec = _SPECS.get(name)
    if spec is None:
        raise EncodingError(f"{name!r} is not shipped with otel-tokens (only {', '.join(NAMES)})")
    return spec


def rank_file(name: str) -> bytes:
    """The encoding's ``.tiktoken`` rank file, exactly as tiktoken downloads it (verified)."""
    spec = _spec(name)
    resource = files(__name__).joinpath(f"{name}.tiktoken.gz")
    try:
        data = gzip.decompress(resource.read_bytes())
    except (OSError, EOFError) as exc:
        raise EncodingError(f"cannot read the bundled {name} encoding: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise EncodingError(
            f"the bundled {name} encoding is damaged: sha256 {digest}, expected {spec.sha256}"
        )
    return data


def load(name: str) -> tiktoken.Encoding:
    """Build the tiktoken ``Encoding`` ``name`` from the bundled, verified rank file."""
    import tiktoken

    spec = _spec(name)
    data = rank_file(name)
    # The .tiktoken format: one "<base64 token> <rank>" per line (tiktoken.load).
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }
    return tiktoken.Encoding(
        name=name,
        pat_str=spec.pat_str,
        mergeable_ranks=ranks,
        special_tokens=dict(spec.special_tokens),
    )
