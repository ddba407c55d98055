"""Every relative link of the project's Markdown documents leads somewhere: the file (or
directory) exists, and a ``#fragment`` names a heading of that file as GitHub renders its
anchor. Documents move between README.md and docs/; a link left pointing at the old place
is caught here rather than by a reader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted(
    [
        ROOT / "README.md",
        ROOT / "bench" / "README.md",
        ROOT / "collector" / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "semconv").rglob("*.md"),
        *(ROOT / "examples").rglob("README.md"),
    ]
)

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def _prose(text: str) -> str:
    """``text`` without fenced code blocks (a ``# comment`` in a shell block is not a
    heading, and ``[x](y)`` in code is not a link)."""
    return _FENCE.sub("", text)


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its text without Markdown link targets and
    emphasis, lower-cased, every character other than a letter, digit, space, ``-`` or
    ``_`` dropped, spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](target) -> text
    text = re.sub(r"[*`]", "", text).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of ``path``; a repeated heading gets ``-1``, ``-2``, ... as on
    GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in _HEADING.finditer(_prose(path.read_text(encoding="utf-8"))):
        base = anchor(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    text = _CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), _prose(path.read_text("utf-8")))
    return [t for t in _LINK.findall(text) if not _EXTERNAL.match(t)]


def test_the_anchor_rule_is_githubs() -> None:
    assert anchor("Cost records: the ledger") == "cost-records-the-ledger"
    assert anchor("The pricing collector: `otel-tokens collector`") == (
        "the-pricing-collector-otel-tokens-collector"
    )
    assert anchor("Calls back to back (`loop.py`) and start-up") == (
        "calls-back-to-back-looppy-and-start-up"
    )
    assert anchor("Rates, bucket by bucket (fail closed)") == "rates-bucket-by-bucket-fail-closed"


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n```sh\n# not a heading\n```\n\n[ok](#title) [bad](#not-a-heading) "
        "`[code](nowhere.md)` [web](https://example.com/x)\n",
        encoding="utf-8",
    )
    assert links(doc) == ["#title", "#not-a-heading"]
    assert anchors(doc) == {"title"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document: Path) -> None:
    broken = []
    for target in links(document):
        file_part, _, fragment = target.partition("#")
        dest = (document.parent / file_part).resolve() if file_part else document
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.name}")
    assert broken == [], f"{document.relative_to(ROOT)}: " + "; ".join(broken)
