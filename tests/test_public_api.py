"""What otel-tokens exports, and the naming rule behind it: modules are private by default
(``_x.py``), each package's ``__init__`` is its public face, and no package imports another
package's private module (a private module of the top package, like ``otel_tokens._safety``,
is shared by all of its subpackages)."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "otel_tokens"


def _package_of(path: Path) -> tuple[str, ...]:
    """``('otel_tokens', 'usage')`` for src/otel_tokens/usage/_read.py."""
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts if path.name == "__init__.py" else rel.parts[:-1]
    return tuple(p for p in parts if p != "__init__")


def _imported_modules(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    """Every module ``path`` imports from otel_tokens, as absolute dotted parts."""
    package = _package_of(path)
    found: list[tuple[int, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, tuple(a.name.split("."))) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = base + tuple(node.module.split(".") if node.module else ())
            else:
                module = tuple((node.module or "").split("."))
            found.append((node.lineno, module))
            # ``from . import _x`` imports a module too.
            found += [(node.lineno, (*module, a.name)) for a in node.names]
    return [(line, m) for line, m in found if m[:1] == ("otel_tokens",)]


def test_no_package_imports_another_packages_private_module() -> None:
    broken = []
    for path in sorted(SRC.rglob("*.py")):
        importer = _package_of(path)
        for line, module in _imported_modules(path):
            for depth, part in enumerate(module[1:], start=1):
                owner = module[:depth]
                if not part.startswith("_") or part.startswith("__"):
                    continue
                # A private name is fine inside its owner package (or a package within it).
                if importer[: len(owner)] != owner:
                    broken.append(f"{path.relative_to(SRC.parent)}:{line} {'.'.join(module)}")
                break
    assert broken == []


# --- what each public package exports (as httpx's tests/test_exported_members.py) ----------
# Changing a public face is deliberate: update tests/public_api.json with the change, and the
# docs. The names live in a data file of their own (not copied from ``__all__``), so an
# ``__all__`` edit alone fails these tests. The ledger pricer is LedgerPricer: "Meter" is
# OpenTelemetry's name for what makes instruments, and means only that here.
EXPORTS: dict[str, set[str]] = {
    package: set(names)
    for package, names in json.loads(
        (Path(__file__).with_name("public_api.json")).read_text(encoding="utf-8")
    ).items()
}
# What a user reads: the README and the reference pages it links to under docs/.
DOCS = "\n".join(
    path.read_text(encoding="utf-8")
    for path in [SRC.parents[1] / "README.md", *sorted((SRC.parents[1] / "docs").glob("*.md"))]
)


def _defined_in(value: object, package: str) -> bool:
    """``value`` is a class or function defined in ``package`` (not one it imports from
    another package, a typing helper or another library's)."""
    if not (inspect.isclass(value) or inspect.isfunction(value)):
        return False
    module = str(getattr(value, "__module__", ""))
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_exports_are_exactly_the_listed_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported)), "a name is listed twice"
    assert set(exported) == EXPORTS[name]


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_every_exported_name_resolves(name: str) -> None:
    module = importlib.import_module(name)
    for member in module.__all__:
        getattr(module, member)  # the top package imports its names lazily: this loads them
    assert set(dir(module)) >= set(module.__all__)


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_every_public_member_of_ours_is_exported(name: str) -> None:
    """What a user can reach without an underscore and is ours is in ``__all__``: nothing
    public by accident (submodules and imported helpers excepted)."""
    module = importlib.import_module(name)
    for member in module.__all__:
        getattr(module, member)
    public = {
        key
        for key, value in vars(module).items()
        if not key.startswith("_") and _defined_in(value, name)
    }
    assert public <= set(module.__all__)


def test_top_level_names_are_the_packages_own_objects() -> None:
    """``otel_tokens.X`` is the very object its home package exports, not a copy."""
    import otel_tokens

    homes = [
        importlib.import_module(f"otel_tokens.{home}")
        for home in ("attribution", "middleware", "pricing", "usage", "workflow", "window")
    ]
    for member in otel_tokens.__all__:
        value = getattr(otel_tokens, member)
        if member in vars(otel_tokens) and getattr(value, "__module__", "") == "otel_tokens":
            continue  # defined here (flush)
        assert any(getattr(home, member, None) is value for home in homes), member


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_every_exported_member_is_documented(name: str) -> None:
    """By a docstring of its own (not one inherited from a base class), or in the README or
    a docs/ page."""
    module = importlib.import_module(name)
    undocumented = []
    for member in module.__all__:
        value = getattr(module, member)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue  # constants: documented where they are used
        doc = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
        if not (doc and doc.strip()) and f"`{member}" not in DOCS:
            undocumented.append(member)
    assert undocumented == []
