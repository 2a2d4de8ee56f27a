"""Write docs/settings.md from the Settings models, so the settings reference cannot drift from the code.

    python scripts/settings_doc.py           # rewrite docs/settings.md
    python scripts/settings_doc.py --check   # exit 1 (with a diff) when docs/settings.md is stale

Each field's environment variable, type, default, allowed range and description come from the pydantic-settings
models themselves; descriptions are the attribute docstrings under each field.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import AliasChoices, AliasPath
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a plain script from a checkout, not only from an installed package
    sys.path.insert(0, str(ROOT))

from buffer.settings import ClientSettings  # noqa: E402
from console.settings import ConsoleSettings  # noqa: E402
from service.settings import Settings  # noqa: E402

TARGET = ROOT / "docs" / "settings.md"
UNITS = {"_s": "s", "_ms": "ms"}
DAY_S = 86400


@dataclass(frozen=True)
class Section:
    """One model's table: who reads these settings, and how they are passed besides the environment."""

    title: str
    model: type[BaseSettings]
    intro: str


SECTIONS = (
    Section(
        "Worker",
        Settings,
        "Read by `storage-worker` (every subcommand) from the environment, then an optional `.env` file in the "
        "working directory. Tests and embedding code may pass the field names as keyword arguments: "
        "`Settings(database_url=...)`.",
    ),
    Section(
        "Agent client",
        ClientSettings,
        "Read by `StorageClient`, `SyncStorageClient` and `storage-buffer` from the environment, then an optional "
        "`.env` file. Every field is also a keyword argument that wins over the environment: "
        "`StorageClient(amqp_url=..., call_timeout_s=2, retries=5)`. Names shared with the worker mean the same.",
    ),
    Section(
        "Console",
        ConsoleSettings,
        "Read by `storage-worker console` (the `console` extra) from the environment, then an optional `.env` "
        "file; `--host` and `--port` win over both. Names shared with the worker mean the same: point them at the "
        "worker's exchange and queues. The console acts as the user of its `AMQP_URL`, an admin when that user "
        "is in `STORAGE_ADMINS`.",
    ),
)


def env_name(model: type[BaseSettings], name: str, field: FieldInfo) -> str:
    """The environment variable pydantic-settings reads for a field: its alias, else the prefixed field name."""
    alias = field.validation_alias or field.alias
    if isinstance(alias, AliasChoices):
        names = [choice for choice in alias.choices if isinstance(choice, str)]
        alias = names[0] if names else None
    elif isinstance(alias, AliasPath):
        alias = None
    text = alias if isinstance(alias, str) else f"{model.model_config.get('env_prefix', '')}{name}"
    return text if model.model_config.get("case_sensitive") else text.upper()


def type_name(annotation: object) -> str:
    """Python's spelling of a field's type, without module paths: ``int | None``, ``frozenset[str]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(arg) for arg in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def human_bytes(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    if value >= 1_000_000 and value % 1_000_000 == 0:
        return f"{value // 1_000_000} MB"
    return f"{value} bytes"


def plain(value: object) -> str:
    """A value as it would be written in the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def default_text(name: str, field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, frozenset | set | list | tuple) and not value:
        return "empty"
    text = f"`{plain(value)}`"
    if name.endswith("_bytes") and isinstance(value, int) and not isinstance(value, bool):
        return f"{text} ({human_bytes(value)})"
    for suffix, unit in UNITS.items():
        if name.endswith(suffix) and isinstance(value, int | float):
            if unit == "s" and value >= DAY_S and value % DAY_S == 0:
                return f"{text} s ({int(value // DAY_S)} d)"
            return f"{text} {unit}"
    return text


BOUNDS: tuple[tuple[type, str, str], ...] = (
    (Ge, "ge", "≥ "),
    (Gt, "gt", "> "),
    (Le, "le", "≤ "),
    (Lt, "lt", "< "),
    (MinLen, "min_length", "length ≥ "),
    (MaxLen, "max_length", "length ≤ "),
)
"""annotated-types' constraint, the attribute holding its value, and how the page writes it."""


def allowed_text(field: FieldInfo) -> str:
    """The constraints the model enforces, so a reader knows what a value is refused for."""
    parts: list[str] = []
    for item in field.metadata:
        bound = next(((attr, sign) for kind, attr, sign in BOUNDS if isinstance(item, kind)), None)
        if bound is not None:
            parts.append(f"{bound[1]}{plain(getattr(item, bound[0]))}")
        elif (pattern := getattr(item, "pattern", None)) is not None:
            choices = re.fullmatch(r"\^\(([\w|]+)\)\$", pattern)
            parts.append(" / ".join(f"`{c}`" for c in choices.group(1).split("|")) if choices else f"`{pattern}`")
    return ", ".join(parts)


def cell(text: str) -> str:
    """One table cell: a single line, pipes escaped, reST's double backticks as Markdown's single ones."""
    return " ".join(text.split()).replace("``", "`").replace("|", "\\|")


def undocumented(model: type[BaseSettings]) -> list[str]:
    """Fields a reader of docs/settings.md would find without a description."""
    return [name for name, field in model.model_fields.items() if not (field.description or "").strip()]


def render() -> str:
    lines = [
        "# Settings",
        "",
        "<!-- Generated by scripts/settings_doc.py from the Settings models; edit the models, then run it. -->",
        "",
        "Every setting is an environment variable (case does not matter). Durations are seconds unless the",
        "field name says `_ms`; sizes are bytes. A value outside *allowed* is refused when the program starts.",
        "",
    ]
    for section in SECTIONS:
        model = section.model
        lines += [
            f"## {section.title} (`{model.__module__}.{model.__name__}`)",
            "",
            section.intro,
            "",
            "| variable | field | type | default | allowed | meaning |",
            "|---|---|---|---|---|---|",
        ]
        for name, field in model.model_fields.items():
            row = (
                f"`{env_name(model, name, field)}`",
                f"`{name}`",
                f"`{type_name(field.annotation)}`",
                default_text(name, field),
                allowed_text(field),
                field.description or "",
            )
            lines.append("| " + " | ".join(cell(part) for part in row) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/settings.md differs from the models")
    args = parser.parse_args(argv)
    text = render()
    missing = {section.model.__name__: undocumented(section.model) for section in SECTIONS}
    for model_name, names in missing.items():
        if names:
            print(f"warning: {model_name} fields without a description: {', '.join(names)}", file=sys.stderr)
    if not args.check:
        TARGET.write_text(text, encoding="utf-8")
        print(f"wrote {TARGET.relative_to(ROOT)}")
        return 0
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
    if current == text:
        return 0
    diff = difflib.unified_diff(
        current.splitlines(), text.splitlines(), "docs/settings.md (committed)", "docs/settings.md (from the models)"
    )
    print("\n".join(list(diff)[:60]), file=sys.stderr)
    print("docs/settings.md is stale: run `python scripts/settings_doc.py` and commit the result", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
