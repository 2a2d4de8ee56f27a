"""``STORAGE_DEFAULT_RETENTION``: the retention a manifest gets when it names none, chosen by artifact type.

The seed systems kept reports 30 days unless told otherwise; here an operator writes that policy once,
``report=30d,cache=1h,*=infinite``, instead of trusting every agent to send it. Each entry is
``<artifact_type>=<retention>`` in the manifest's retention grammar (``contracts.retention``); ``*`` is every
other type, ``infinite`` when absent. The worker writes the applied value into the stored manifest, so a
reader sees the retention the artifact actually has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from contracts.retention import INFINITE, parse_retention

EVERY_OTHER_TYPE = "*"
_MAX_TYPE_LENGTH = 50  # the manifest's artifact_type limit: a longer name could never match


@dataclass(frozen=True, slots=True)
class DefaultRetention:
    by_type: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    fallback: str = INFINITE

    def for_type(self, artifact_type: str) -> str:
        return self.by_type.get(artifact_type, self.fallback)

    def __str__(self) -> str:
        entries = [f"{kind}={retention}" for kind, retention in self.by_type.items()]
        return ",".join([*entries, f"{EVERY_OTHER_TYPE}={self.fallback}"])

    @classmethod
    def parse(cls, text: str) -> DefaultRetention:
        """The policy in ``text``; ValueError naming the first entry that is wrong and why."""
        by_type: dict[str, str] = {}
        fallback: str | None = None
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            kind, equals, retention = (part.strip() for part in entry.partition("="))
            if not equals or not kind or not retention:
                raise ValueError(f"entry {entry!r} is not <artifact_type>=<retention>, e.g. report=30d")
            if len(kind) > _MAX_TYPE_LENGTH:
                raise ValueError(f"artifact type {kind[:20]!r}... is longer than {_MAX_TYPE_LENGTH} characters")
            try:
                parse_retention(retention)
            except ValueError as exc:
                raise ValueError(f"entry {entry!r}: {exc}") from None
            if kind in by_type or (kind == EVERY_OTHER_TYPE and fallback is not None):
                raise ValueError(f"artifact type {kind!r} is given twice")
            if kind == EVERY_OTHER_TYPE:
                fallback = retention
            else:
                by_type[kind] = retention
        return cls(MappingProxyType(by_type), fallback if fallback is not None else INFINITE)
