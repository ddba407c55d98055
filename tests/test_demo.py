"""Where the fake provider servers live: a test-support package beside ``otel_tokens``
(``src/otel_tokens_fakes``), not in the wheel, imported by ``otel_tokens`` only when the demo
runs offline, which says what to do when they are missing. The offline demo itself (all
four wire formats, metered and priced) is run in tests/instrumentation/test_auto_instrument.py."""

from __future__ import annotations

import ast
import importlib.util
import sys
import tomllib
from pathlib import Path

import pytest

from otel_tokens import cli
from otel_tokens.demo import KEY_VARIABLES
from otel_tokens.reporting import EXIT_BAD_INPUT

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """The modules ``path`` imports, each with whether the import is at module level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append((node.module, id(node) in top))
    return found


def test_otel_tokens_imports_the_fakes_only_when_the_demo_runs_offline() -> None:
    importers = {}
    for path in sorted((SRC / "otel_tokens").rglob("*.py")):
        for module, top_level in _imports(path):
            if module.split(".")[0] == "otel_tokens_fakes":
                importers[path.relative_to(SRC).as_posix()] = top_level
    assert importers == {"otel_tokens/demo/_offline.py": False}


def test_the_fakes_import_nothing_of_otel_tokens() -> None:
    for path in sorted((SRC / "otel_tokens_fakes").rglob("*.py")):
        modules = [m for m, _ in _imports(path)]
        assert not [m for m in modules if m.split(".")[0] == "otel_tokens"], path


def test_the_fakes_are_not_in_the_wheel_but_import_from_a_clone() -> None:
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["hatch"][
        "build"
    ]["targets"]["wheel"]
    assert wheel["packages"] == ["src/otel_tokens"]
    assert wheel["dev-mode-dirs"] == ["src"]  # an editable install puts all of src/ on the path
    spec = importlib.util.find_spec("otel_tokens_fakes")
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).is_relative_to(SRC / "otel_tokens_fakes")


def test_offline_demo_without_the_fakes_says_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "otel_tokens_fakes", None)  # as in a wheel install
    assert cli.main(["demo"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "otel_tokens_fakes" in err
    assert "pip install -e '.[demo]'" in err
    assert "OPENAI_API_KEY" in err
