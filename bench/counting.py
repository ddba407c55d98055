"""Counting speed for o200k_base on long multi-turn conversations: otel-tokens' pre-flight
(through its per-message cache, counting turn after turn as an application does before each
call) against plain ``tiktoken`` and Hugging Face ``tokenizers`` recounting the whole
conversation every turn, in the same run, on the same text.

The conversation: a system prompt, then ``--turns`` user/assistant turns of ``--words``
words each (deterministic pseudo-English with numbers and punctuation). Before turn t the
request holds the system prompt, the earlier turns and the new user message; each subject
counts that request once per turn, all turns in order. Tokens per second are the tokens of
those requests (the same total for every subject, checked equal) over the wall time (the
batch subjects use several threads), the best of ``--rounds`` rounds. Each round of
pre-flight starts from an empty cache, so its first turn is counted in full.

The ``tokenizers`` subject is o200k_base itself, built once (not timed) from the bundled
encoding's ranks and pattern as a byte-level BPE ``tokenizer.json``; its counts are checked
equal to tiktoken's on the bench text. It counts a batch (``encode_batch``, all threads) and
one message at a time.

    python bench/counting.py                  # about a minute (the conversion takes most)
    python bench/counting.py --turns 100 --words 400 --rounds 5
    python bench/counting.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from otel_tokens import counting
from otel_tokens.window import MessageCountCache, preflight

_VOCABULARY = (
    "the of and to in is that for it as with was on be by this are from at or an have not "
    "which but all they their has been one can more will would there if about what so when "
    "model token cost budget request response stream latency provider invoice ledger "
    "tenant price catalog window context output input cache conversation message tool"
)
_WORDS = _VOCABULARY.split()


def conversation(turns: int, words: int, seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)

    def text() -> str:
        out = []
        for i in range(words):
            word = rng.choice(_WORDS)
            if rng.random() < 0.05:
                word = str(rng.randint(0, 99999))
            if i % 17 == 16:
                word += rng.choice((".", ",", "?", "!", ";"))
            out.append(word.capitalize() if i % 17 == 0 else word)
        return " ".join(out)

    messages = [{"role": "system", "content": "You are a careful assistant. " + text()}]
    for _ in range(turns):
        messages.append({"role": "user", "content": text()})
        messages.append({"role": "assistant", "content": text()})
    return messages


def requests(messages: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """The request before each turn: everything so far plus the new user message."""
    return [messages[: 2 + 2 * t] for t in range((len(messages) - 1) // 2)]


def hf_o200k() -> Any:
    """o200k_base as a Hugging Face tokenizer (byte-level BPE), from the bundled ranks."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    enc: Any = counting.encoder_for("gpt-4o")
    ranks: dict[bytes, int] = enc._mergeable_ranks
    byte_char = _bytes_to_unicode()

    def spell(token: bytes) -> str:
        return "".join(byte_char[b] for b in token)

    def bpe(token: bytes, max_rank: int) -> list[bytes]:
        parts = [bytes([b]) for b in token]
        while True:
            best: tuple[int, int] | None = None
            for i in range(len(parts) - 1):
                rank = ranks.get(parts[i] + parts[i + 1])
                if rank is not None and rank < max_rank and (best is None or rank < best[1]):
                    best = (i, rank)
            if best is None:
                return parts
            i = best[0]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]

    vocab = {spell(t): r for t, r in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            left, right = bpe(token, rank)
            merges.append((spell(left), spell(right)))
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(enc._pat_str), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte to printable character table, which byte-level BPE vocabularies use."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


# The cookbook's framing, the same arithmetic for every subject: 3 per message, 3 priming.
def _framed(contents: list[int], roles: list[int]) -> int:
    return 3 + sum(3 + c + r for c, r in zip(contents, roles, strict=True))


def subjects(hf: Any) -> dict[str, Callable[[list[list[dict[str, str]]]], int]]:
    enc: Any = counting.encoder_for("gpt-4o")

    def ours(reqs: list[list[dict[str, str]]]) -> int:
        cache = MessageCountCache(maxsize=4096)
        return sum(preflight("gpt-4o", r, cache=cache).input_tokens for r in reqs)

    def ours_uncached(reqs: list[list[dict[str, str]]]) -> int:
        return sum(preflight("gpt-4o", r, cache=None).input_tokens for r in reqs)

    def tiktoken_plain(reqs: list[list[dict[str, str]]]) -> int:
        total = 0
        for r in reqs:
            contents = [len(enc.encode_ordinary(m["content"])) for m in r]
            roles = [len(enc.encode_ordinary(m["role"])) for m in r]
            total += _framed(contents, roles)
        return total

    def tiktoken_batch(reqs: list[list[dict[str, str]]]) -> int:
        total = 0
        for r in reqs:
            contents = [len(t) for t in enc.encode_ordinary_batch([m["content"] for m in r])]
            roles = [len(t) for t in enc.encode_ordinary_batch([m["role"] for m in r])]
            total += _framed(contents, roles)
        return total

    found: dict[str, Callable[[list[list[dict[str, str]]]], int]] = {
        "otel-tokens preflight (per-message cache)": ours,
        "otel-tokens preflight (no cache)": ours_uncached,
        "tiktoken encode_ordinary, recount every turn": tiktoken_plain,
        "tiktoken encode_ordinary_batch, recount": tiktoken_batch,
    }
    if hf is not None:

        def hf_one(reqs: list[list[dict[str, str]]]) -> int:
            total = 0
            for r in reqs:
                contents = [len(hf.encode(m["content"], add_special_tokens=False).ids) for m in r]
                roles = [len(hf.encode(m["role"], add_special_tokens=False).ids) for m in r]
                total += _framed(contents, roles)
            return total

        def hf_batch(reqs: list[list[dict[str, str]]]) -> int:
            total = 0
            for r in reqs:
                texts = [m["content"] for m in r] + [m["role"] for m in r]
                counts = [len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False)]
                total += _framed(counts[: len(r)], counts[len(r) :])
            return total

        found["tokenizers encode, recount every turn"] = hf_one
        found["tokenizers encode_batch, recount"] = hf_batch
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--words", type=int, default=300, help="words per message")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-hf", action="store_true", help="skip the tokenizers subject")
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)

    messages = conversation(args.turns, args.words)
    reqs = requests(messages)
    hf = None
    if not args.no_hf:
        started = time.perf_counter()
        hf = hf_o200k()
        print(
            f"tokenizers o200k_base built in {time.perf_counter() - started:.1f} s", file=sys.stderr
        )
        enc: Any = counting.encoder_for("gpt-4o")
        for m in messages:
            if len(hf.encode(m["content"]).ids) != len(enc.encode_ordinary(m["content"])):
                raise SystemExit("the tokenizers build of o200k_base disagrees with tiktoken")

    # Warm up: the price catalog pre-flight prices the worst case with loads on first use.
    preflight("gpt-4o", reqs[0], cache=None)
    results: dict[str, dict[str, float]] = {}
    expected: int | None = None
    for name, run in subjects(hf).items():
        best = float("inf")
        for _ in range(args.rounds):
            started = time.perf_counter()
            tokens = run(reqs)
            best = min(best, time.perf_counter() - started)
            if expected is None:
                expected = tokens
            elif tokens != expected:
                raise SystemExit(f"{name} counted {tokens} tokens, not {expected}")
        results[name] = {"seconds": best, "tokens_per_second": (expected or 0) / best}

    baseline = results["tiktoken encode_ordinary, recount every turn"]["tokens_per_second"]
    print(
        f"{args.turns} turns of {args.words} words: {len(reqs)} requests, "
        f"{expected:,} tokens counted; best of {args.rounds} rounds (wall time)"
    )
    width = max(len(n) for n in results)
    for name, r in results.items():
        print(
            f"  {name:<{width}}  {r['tokens_per_second'] / 1e6:8.2f} M tokens/s"
            f"  {r['tokens_per_second'] / baseline:6.1f}x tiktoken"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"turns": args.turns, "words": args.words, "tokens": expected, "results": results},
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
