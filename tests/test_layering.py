"""DESIGN.md's layering, checked on every import statement: ``contracts`` imports nothing of ours; ``service``
and ``buffer`` import ``contracts`` and never each other; the console is a client (``buffer``) and never
reaches into the worker; the worker finds the console only through its entry point."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"contracts", "service", "buffer", "console"}
ALLOWED = {
    "contracts": set(),
    "service": {"contracts"},
    "buffer": {"contracts"},
    "console": {"contracts", "buffer"},
}


def imported_packages(source: Path) -> set[str]:
    """Our top-level packages a module imports (absolute imports; relative ones stay inside the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package] - {package})
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {path: names for path, names in wrong.items() if names} == {}
