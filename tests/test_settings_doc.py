"""docs/settings.md says what the Settings models say: the variables they read, and what each one is for."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "settings_doc.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_doc", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is being executed
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()
FIELDS = [
    pytest.param(section.model, name, field, id=f"{section.model.__name__}.{name}")
    for section in GENERATOR.SECTIONS
    for name, field in section.model.model_fields.items()
]


def test_settings_page_is_current() -> None:
    """A setting added, renamed or re-described without regenerating docs/settings.md fails here."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr


def test_check_mode_catches_a_stale_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check compares the page byte for byte: a hand edit is reported, the generated text is not."""
    page = tmp_path / "settings.md"
    monkeypatch.setattr(GENERATOR, "TARGET", page)
    page.write_text(GENERATOR.render().replace("STORAGE_QUEUE", "STORAGE_QUEUES"), encoding="utf-8")
    assert GENERATOR.main(["--check"]) == 1
    page.write_text(GENERATOR.render(), encoding="utf-8")
    assert GENERATOR.main(["--check"]) == 0


def test_every_setting_has_a_description() -> None:
    """A reader of docs/settings.md never meets a setting without a word about what it does."""
    missing = {section.model.__name__: GENERATOR.undocumented(section.model) for section in GENERATOR.SECTIONS}
    assert not any(missing.values()), f"add a docstring under each of these fields: {missing}"


def _another_value(field: FieldInfo) -> str:
    """A valid value other than the default, as it would be written in the environment."""
    default = field.default
    if field.examples:  # a value with a grammar of its own (STORAGE_DEFAULT_RETENTION) gives its example
        return str(field.examples[0])
    if isinstance(default, bool):
        return "false" if default else "true"
    if isinstance(default, int | float):
        return str(default + 1)
    if default is None:
        return "9102"  # a port, a node name: valid for each optional field
    for item in field.metadata:
        if choices := re.fullmatch(r"\^\(([\w|]+)\)\$", getattr(item, "pattern", None) or ""):
            return next(choice for choice in choices.group(1).split("|") if choice != default)
    return f"{default or 'admin'}-probe"


@pytest.mark.parametrize(("model", "name", "field"), FIELDS)
def test_documented_variable_is_the_one_read(
    model: type[BaseSettings], name: str, field: FieldInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setting the variable docs/settings.md names for a field changes that field."""
    value = _another_value(field)
    monkeypatch.setenv(GENERATOR.env_name(model, name, field), value)
    assert getattr(model(), name) == getattr(model(**{name: value}), name) != field.default
