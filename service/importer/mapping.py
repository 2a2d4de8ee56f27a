"""From a legacy row to our manifest: enum names, naive datetimes, context JSON, ids and file locations.

Ids: a legacy id that already has our form ``art_<uuid>`` is kept. Any other id (the legacy store did
not enforce the pattern) becomes ``art_<uuid5(LEGACY_ID_NAMESPACE, legacy id)>``: the same legacy id
always maps to the same artifact id, so a re-run finds what the first run imported, and ``supersedes``
and ``context.input_artifacts`` references follow the same rule. Such an artifact keeps its old id in
the label ``legacy_id``, which ``list_artifacts`` can filter on.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from contracts import ARTIFACT_ID_PATTERN, ArtifactManifest, ArtifactStatus, Visibility, parse_retention
from service.importer.legacy import FILES_DIR, LegacyRow, LegacyValue

LEGACY_ID_NAMESPACE = uuid.UUID("6b1f7c52-3d0e-5a8b-9c41-2f7e6d5a4b30")
LEGACY_ID_LABEL = "legacy_id"
MAX_LABEL_VALUE = 256
_ID = re.compile(ARTIFACT_ID_PATTERN)
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_MARKER = f"/{FILES_DIR}/"


class Skip(Exception):
    """A record that cannot be imported: ``reason`` is a short stable name the summary counts by."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Mapped:
    legacy_id: str
    manifest: ArtifactManifest
    """Our manifest, its ``uri`` still the legacy one (the importer points it at the temp copy)."""
    source: Path
    """The legacy file under ``DIR/artifacts/``."""


def artifact_id(legacy_id: str) -> str:
    legacy_id = legacy_id.strip()
    if _ID.fullmatch(legacy_id):
        return legacy_id
    return f"art_{uuid.uuid5(LEGACY_ID_NAMESPACE, legacy_id)}"


def map_row(row: LegacyRow, root: Path) -> Mapped:
    """Our manifest and the file for one legacy row, or ``Skip`` saying why it cannot be."""
    legacy_id = _text(row.get("id"))
    if not legacy_id:
        raise Skip("invalid_record", "the record has no id")
    our_id = artifact_id(legacy_id)
    labels = {}
    if our_id != legacy_id and len(legacy_id) <= MAX_LABEL_VALUE:
        labels[LEGACY_ID_LABEL] = legacy_id
    fields: dict[str, object] = {
        "id": our_id,
        "version": row.get("version") or 1,
        "supersedes": artifact_id(s) if (s := _text(row.get("supersedes"))) else None,
        "trace_id": _text(row.get("trace_id")),
        "step_id": _text(row.get("step_id")),
        "created_by": _text(row.get("created_by")),
        "artifact_type": _text(row.get("artifact_type")),
        "content_type": _text(row.get("content_type")) or "application/octet-stream",
        "uri": _text(row.get("uri")),
        "size_bytes": row.get("size_bytes"),
        "checksum": _checksum(row.get("checksum")),
        "status": _enum(row.get("status"), ArtifactStatus, "status", ArtifactStatus.COMPLETED),
        "retention": _retention(row.get("retention")),
        "owner": _text(row.get("owner")) or _text(row.get("created_by")),
        "visibility": _enum(row.get("visibility"), Visibility, "visibility", Visibility.TRACE),
        "context": _context(row.get("context")),
        "labels": labels,
    }
    if (created := _created_at(row.get("created_at"))) is not None:
        fields["created_at"] = created
    try:
        manifest = ArtifactManifest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Skip("invalid_record", f"{where}: {first['msg']}") from None
    return Mapped(legacy_id, manifest, locate(manifest.uri, root))


def locate(uri: str, root: Path) -> Path:
    """Re-root a legacy URI onto ``root``: its part after ``/artifacts/`` under ``root/artifacts/``.

    A path may hold ``/artifacts/`` more than once (the old root itself, or a trace named so): the
    shortest tail whose file exists wins; none existing is ``file_missing``. Tails that would leave
    ``root/artifacts/`` (``..``, symlinks) are ``bad_uri``.
    """
    parts = urlsplit(uri)
    path = unquote(parts.path) if parts.scheme in ("file", "") else ""
    if parts.scheme not in ("file", ""):
        raise Skip("bad_uri", f"uri scheme {parts.scheme!r} is not a local file: {uri}")
    base = (root / FILES_DIR).resolve()
    tails = [path[i + len(_MARKER) :] for i in _occurrences(path.replace("\\", "/"), _MARKER)]
    if not tails:
        raise Skip("bad_uri", f"uri has no /{FILES_DIR}/ part to re-root: {uri}")
    candidates = []
    for tail in reversed(tails):
        if not tail or ".." in tail.split("/"):
            continue
        candidate = Path(os.path.realpath(base / tail))
        if candidate != base and base in candidate.parents:
            candidates.append(candidate)
    if not candidates:
        raise Skip("bad_uri", f"uri leaves {FILES_DIR}/ once re-rooted: {uri}")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise Skip("file_missing", f"no file at {candidates[0]}")


def _occurrences(text: str, marker: str) -> list[int]:
    found, start = [], 0
    while (index := text.find(marker, start)) != -1:
        found.append(index)
        start = index + 1
    return found


def _text(value: LegacyValue) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _enum(
    value: LegacyValue, enum: type[ArtifactStatus] | type[Visibility], field: str, default: ArtifactStatus | Visibility
) -> str:
    text = _text(value)
    if text is None:
        return str(default.value)
    lowered = text.lower()
    if lowered not in {member.value for member in enum}:
        raise Skip("invalid_record", f"{field} {text!r} is none of {', '.join(m.value.upper() for m in enum)}")
    return lowered


def _checksum(value: LegacyValue) -> str | None:
    text = _text(value)
    if text is None:
        return None
    bare = text.split(":", 1)[1] if text.lower().startswith("sha256:") else text
    return f"sha256:{bare.lower()}" if _HEX64.fullmatch(bare) else text


def _retention(value: LegacyValue) -> str | None:
    """The legacy retention as ours; none given leaves it to the worker's default for the type."""
    text = _text(value)
    if text is None:
        return None
    if text.lower() == "infinite":
        return "infinite"
    for candidate in (text, text.lower()):
        try:
            parse_retention(candidate)
        except ValueError:
            continue
        return candidate
    raise Skip("invalid_record", f"retention {text!r} is not 'infinite' or a duration")


def _created_at(value: LegacyValue) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    try:
        moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise Skip("invalid_record", f"created_at {value!r} is not a datetime") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _context(value: LegacyValue) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    try:
        context = json.loads(value) if isinstance(value, str | bytes) else value
    except ValueError:
        raise Skip("invalid_record", "context is not valid JSON") from None
    if context is None:
        return None
    if not isinstance(context, dict):
        raise Skip("invalid_record", "context is JSON but not an object")
    inputs = context.get("input_artifacts")
    if isinstance(inputs, list):
        context = {**context, "input_artifacts": [artifact_id(str(i)) for i in inputs]}
    return context
