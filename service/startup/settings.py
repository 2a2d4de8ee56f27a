"""The settings stage: every refused value named in one line, not pydantic's multi-line report."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_settings import SettingsError

from service.settings import Settings
from service.startup.codes import Exit, Stage, caused


def load_settings() -> Settings:
    """The settings, or one line naming every variable whose value is refused."""
    try:
        return Settings()
    except SettingsError as exc:  # a value pydantic-settings could not even decode
        raise caused(exc, Stage.SETTINGS, str(exc), "see docs/settings.md", Exit.SETTINGS_INVALID) from exc
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            name = ".".join(str(part) for part in item["loc"]).upper() or "settings"
            shown = "" if "URL" in name else f" (got {str(item.get('input'))[:40]!r})"
            problems.append(f"{name}: {item['msg']}{shown}")
        raise caused(exc, Stage.SETTINGS, "; ".join(problems), "see docs/settings.md", Exit.SETTINGS_INVALID) from exc
