"""What otel-tokens exports, and the naming rule behind it: modules are private by default
(``_x.py``), each package's ``__init__`` is its public face, and no package imports another
package's private module (a private module of the top package, like ``otel_tokens._safety``,
is shared by all of its subpackages)."""

from __future__ import annotations

import ast
from pathlib import Path

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
