"""The examples of README.md and the docs/ pages do what they say: the pricing command prints
what docs/pricing.md shows, the Python examples give the values in their comments, and the
YAML examples load. The text is read from the documents, so an edit that breaks an example
fails here."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from otel_tokens import TokenUsage
from otel_tokens.budgets import load_budgets
from otel_tokens.pricing import Catalog

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
README = ROOT / "README.md"
PRICING = ROOT / "docs" / "pricing.md"


def block(document: Path, language: str, marker: str) -> str:
    """The one ```language block of ``document`` that contains ``marker``."""
    blocks = re.findall(rf"```{language}\n(.*?)```", document.read_text("utf-8"), re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"{document.name}: one {language} block with {marker!r}"
    return found[0]


def catalog_versions_alike(text: str) -> str:
    """The genai-prices release in a catalog version moves with the installed data."""
    return re.sub(r"genai-prices@\d+\.\d+\.\d+", "genai-prices@<version>", text)


def run_console(example: str) -> tuple[str, str]:
    """(the documented output, the output of running the documented ``$`` command)."""
    first, *rest = example.splitlines()
    assert first.startswith("$ ")
    lines = [first[2:]]
    while lines[-1].endswith("\\"):  # continuation lines of the command
        lines[-1] = lines[-1][:-1]
        lines.append(rest.pop(0))
    command = " ".join(line.strip() for line in lines)
    done = subprocess.run(
        command,
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": str(BIN), "HOME": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    return "\n".join(rest).strip(), done.stdout.strip()


def test_the_pricing_page_price_command_prints_what_it_shows() -> None:
    documented, printed = run_console(block(PRICING, "console", "$ otel-tokens price"))
    assert catalog_versions_alike(printed) == catalog_versions_alike(documented)


def test_the_readme_price_command_prices() -> None:
    _, printed = run_console(block(README, "console", "$ otel-tokens price"))
    assert printed.splitlines()[0].endswith(": priced")


def _results(code: str) -> list[tuple[str, str, Any]]:
    """Run ``code``; for each line ``expression  # expected`` whose comment is a Python value
    (a trailing ``...`` in a container: the rest left out), (expression, expected, value)."""
    namespace: dict[str, Any] = {}
    exec(compile(code, "<documented example>", "exec"), namespace)
    results = []
    for line in code.splitlines():
        match = re.match(r"^(\S.*?)\s+# (.+)$", line)
        if match and not match.group(1).startswith("#"):
            value = eval(match.group(1), namespace)
            results.append((match.group(1), match.group(2), value))
    return results


def _matches(expected: str, value: Any) -> bool:
    if expected.endswith(", ...}"):  # {'a': 1, 'b': 2, ...}: these items among others
        shown = ast.literal_eval(re.sub(r"Decimal\('([^']*)'\)", r"'\1'", expected[:-6] + "}"))
        return all(str(value[key]) == item for key, item in shown.items())
    expected = re.sub(r"Decimal\('([^']*)'\)", r"'\1'", expected)
    if isinstance(value, tuple):
        value = tuple(str(v) if isinstance(v, Decimal) else v for v in value)
    return bool(ast.literal_eval(expected) == value)


def test_the_pricing_page_python_example_gives_its_comments() -> None:
    code = block(PRICING, "python", "from_openai_chat")
    results = _results(code)
    assert len(results) == 4, results
    for expression, expected, value in results:
        if "catalog_version" in expression:  # the installed genai-prices release
            assert catalog_versions_alike(value) == catalog_versions_alike(eval(expected))
            continue
        assert _matches(expected, value), (expression, expected, value)
    # TokenUsage(input=976, cache_read=1024, ...): the buckets the converter gives
    shown = re.search(r"# TokenUsage\((.*)\)", code)
    assert shown is not None
    namespace: dict[str, Any] = {}
    exec(compile(code, "<documented example>", "exec"), namespace)
    for field, count in re.findall(r"(\w+)=(\d+)", shown.group(1)):
        assert getattr(namespace["usage"], field) == int(count), field


def test_the_readme_python_example_gives_its_comment() -> None:
    results = _results(block(README, "python", "from_openai_chat"))
    assert len(results) == 1, results
    for expression, expected, value in results:
        assert _matches(expected, value), (expression, expected, value)
    assert value[1] == Decimal("0.00672")


def test_the_pricing_page_price_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(block(PRICING, "yaml", "discounts:"), encoding="utf-8")
    catalog = Catalog.load(path, use_env=False)
    usage = TokenUsage(input=1_000_000)
    result = catalog.price(usage, "gpt-4o", provider="openai")
    assert (result.status, result.total) == ("priced", Decimal("2.00"))


@pytest.mark.parametrize(
    ("document", "marker", "names"),
    [
        (README, "acme-monthly", ["acme-monthly"]),
        (ROOT / "docs" / "budgets.md", "globex-prepaid", ["acme-monthly", "globex-prepaid"]),
    ],
)
def test_the_budget_files_load(
    document: Path, marker: str, names: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text(block(document, "yaml", marker), encoding="utf-8")
    assert [b.name for b in load_budgets(path)] == names
