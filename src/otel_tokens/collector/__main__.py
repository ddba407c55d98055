"""``python -m otel_tokens.collector [options]``: the same as ``otel-tokens collector``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .cli import add_parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-tokens")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["collector", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
