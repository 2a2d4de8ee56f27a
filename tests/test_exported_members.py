"""Each package's public API is exactly its ``__all__`` (after httpx's test of the same name)."""

from __future__ import annotations
import __future__

import importlib
import types

import pytest

PACKAGES = ["contracts", "buffer"]
_FUTURE_FEATURE = type(__future__.annotations)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_public_names_are_exported(name: str) -> None:
    """Every public name a package defines or re-exports is in its ``__all__``, and ``__all__`` names nothing else."""
    package = importlib.import_module(name)
    exported = getattr(package, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    public = {
        member
        for member, value in vars(package).items()
        if not member.startswith("_") and not isinstance(value, types.ModuleType | _FUTURE_FEATURE)
    }
    assert sorted(public - set(exported)) == [], f"public in {name} but not in __all__"
    extra = set(exported) - public
    missing = sorted(member for member in extra if not hasattr(package, member))
    assert missing == [], f"{name}.__all__ names what the package does not have"
    for member in extra:  # what remains are submodules exported on purpose, such as contracts.topology
        value = getattr(package, member)
        assert isinstance(value, types.ModuleType) and value.__name__ == f"{name}.{member}", member
