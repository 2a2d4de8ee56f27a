"""Commands the fault tests send: register_artifact envelopes whose files are staged like an agent does."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts import CommandEnvelope, make_command
from tests.support.artifacts import manifest_for
from tests.support.tally import Tally


@dataclass(frozen=True, slots=True)
class Sent:
    envelope: CommandEnvelope
    manifest: dict[str, Any]
    body: bytes

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def artifact_id(self) -> str:
        return str(self.manifest["id"])


def register_commands(storage_root: Path, count: int, *, tag: str, source: str = "agent-faults") -> list[Sent]:
    """``count`` register_artifact commands, each with its own small file already in ``temp/``."""
    sent = []
    for i in range(count):
        manifest = manifest_for(storage_root, f"{tag} payload {i}".encode(), trace_id=f"trace-{tag}")
        envelope = make_command("register_artifact", {"manifest": manifest}, source=source)
        sent.append(Sent(envelope, manifest, envelope.to_json_bytes()))
    return sent


def file_matches(uri: str, checksum: str) -> bool:
    """The artifact's file is at its permanent URI with the registered bytes."""
    path = Path(uri.removeprefix("file://"))
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return False
    return "sha256:" + digest == checksum


def reply_kind(reply: dict[str, Any]) -> str:
    """``RESULT``, or ``ERROR <code>``."""
    if reply.get("type") == "ai.team.result":
        return "RESULT"
    return f"ERROR {reply.get('data', {}).get('error', {}).get('code')}"


def first_result(tally: Tally, command_id: str, replies: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A command's first reply when it is a RESULT (an ERROR is counted unexpected); None when there is none."""
    if not replies:
        return None
    first = replies[0]
    if reply_kind(first) != "RESULT":
        tally.unexpected.append(f"{command_id}: {reply_kind(first)} {first['data']}")
        return None
    return first


def same_reply(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two copies of one reply: same reply id, same type, byte-equal data (routing fields may differ)."""
    return a.get("id") == b.get("id") and a.get("type") == b.get("type") and _canon(a["data"]) == _canon(b["data"])


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
