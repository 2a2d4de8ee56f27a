"""Build files and manifests the way an agent would before registering them."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any


def new_artifact_id() -> str:
    return f"art_{uuid.uuid4()}"


def checksum(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_temp(root: Path, data: bytes, name: str | None = None) -> Path:
    """Write ``data`` under ``<root>/temp/`` like the client's upload step does."""
    path = root / "temp" / (name or f"{uuid.uuid4().hex}.bin")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def manifest_for(root: Path, data: bytes = b"result bytes", **overrides: Any) -> dict[str, Any]:
    """A valid manifest whose file exists in temp/ with the right size and checksum."""
    path = write_temp(root, data, overrides.pop("filename", None))
    manifest: dict[str, Any] = {
        "id": new_artifact_id(),
        "trace_id": "trace-1",
        "created_by": "agent-test",
        "artifact_type": "report",
        "content_type": "text/plain",
        "uri": path.as_uri(),
        "size_bytes": len(data),
        "checksum": checksum(data),
    }
    manifest.update(overrides)
    return manifest
