"""Nothing skips quietly: every test that cannot run here stops through the one rule of ``tests/support``.

The rule (:mod:`tests.support.requirements`) skips on a developer's machine and fails in CI. A
``pytest.skip`` written anywhere else, a ``skipif`` mark or an ``importorskip`` would skip in CI too, and a
whole database's worth of tests could vanish from it unnoticed; so would a test that probes for a service
itself and goes another way. This test reads the suite's source and names every such place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import requirements

TESTS = Path(__file__).parent
RULE = Path(requirements.__file__)

SKIPPING_NAMES = {"skip", "skipif", "importorskip", "xfail", "skipIf", "skipUnless", "SkipTest"}
"""Attributes and imported names that skip a test (pytest's and unittest's)."""

PROBES = {"pg_available", "find_broker", "rabbitmq_bin_dir", "postgres_bin_dir"}
"""Availability checks a test could branch on; only ``tests/support`` may call them."""

ALLOWED: dict[str, str] = {
    "tests/operating/test_startup_errors.py::test_a_read_only_storage_root_is_one_line": (
        "root writes into a read-only folder all the same: no service is missing, the check cannot be made as root"
    ),
}
"""``"path::function"`` → why that skip is not about a missing service (a Docker engine for testcontainers
would be another). Each entry is a deliberate exception; keep the list short."""


def _skips_and_probes(path: Path) -> list[tuple[str, int, str]]:
    """(enclosing function, line, what) for every skipping construct and probe call in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Attribute) and node.attr in SKIPPING_NAMES and _is_test_framework(node.value):
            found.append((function, node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and any(alias.name in SKIPPING_NAMES for alias in node.names):
            found.append((function, node.lineno, f"from {node.module} import a skip"))
        elif isinstance(node, ast.Call) and _called_name(node.func) in PROBES and path.parent.name != "support":
            found.append((function, node.lineno, f"{_called_name(node.func)}() outside tests/support"))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "<module>")
    return found


def _is_test_framework(base: ast.expr) -> bool:
    """``pytest.``, ``pytest.mark.``, ``unittest.`` (or an imported ``mark.``): not some object's own ``skip``."""
    if isinstance(base, ast.Name):
        return base.id in {"pytest", "unittest", "mark"}
    return isinstance(base, ast.Attribute) and base.attr in {"mark", "TestCase"}


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def test_every_skip_goes_through_the_rule() -> None:
    """No test file skips, marks a skip or probes for a service except through ``tests.support.requirements``."""
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path in {RULE, Path(__file__)}:  # the rule itself, and this test's own skip checks
            continue
        relative = path.relative_to(TESTS.parent).as_posix()
        for function, line, what in _skips_and_probes(path):
            if f"{relative}::{function}" not in ALLOWED:
                offenders.append(f"{relative}:{line} ({function}): {what}")
    assert offenders == [], "skips outside tests.support.requirements:\n" + "\n".join(offenders)


def test_the_scan_sees_each_way_of_skipping(tmp_path: Path) -> None:
    """The scan finds a skip call, a skipif mark, an importorskip, an imported skip and a probe, and no
    attribute that merely happens to be called ``skip``."""
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import pytest\nfrom pytest import skip\n"
        "@pytest.mark.skipif(True, reason='x')\ndef test_a():\n    pytest.skip('x')\n"
        "def test_b():\n    pytest.importorskip('nothing')\n"
        "async def test_c():\n    if not await pg_available():\n        return\n"
        "def test_d(spec):\n    assert spec.skip == 0\n"
    )
    found = {(function, what) for function, _, what in _skips_and_probes(sample)}
    assert found == {
        ("<module>", "from pytest import a skip"),
        ("test_a", ".skipif"),
        ("test_a", ".skip"),
        ("test_b", ".importorskip"),
        ("test_c", "pg_available() outside tests/support"),
    }


@pytest.mark.parametrize("ci", ["", "0", "false"])
def test_a_missing_service_skips_outside_ci(ci: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL"):
        requirements.missing(requirements.NO_POSTGRES)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_service_fails_in_ci(ci: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``CI`` set the same stop is a failure that still names what is missing."""
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"no PostgreSQL.*CI is set"):
        requirements.missing(requirements.NO_POSTGRES)


async def test_a_stopped_database_fails_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the PostgreSQL tests meet when the database is down in CI: a failure, not a skip."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(requirements, "pg_available", _never)
    with pytest.raises(pytest.fail.Exception, match="no PostgreSQL"):
        await requirements.require_postgres()


async def _never() -> bool:
    return False
