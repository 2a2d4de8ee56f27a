"""The agent's side of a buffered registration with a file copy: a local storage root, and fake workers."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from buffer import Replayer, SpillBuffer, Stager, new_artifact_id
from buffer.restage import StorageFiles
from contracts import CommandEnvelope
from tests.support.fake_transport import FakeTransport, command, result


class Root:
    """A local storage root the way an agent sees it: stage files, and play the worker's temp_orphans."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.uri = path.as_uri()
        self.files = StorageFiles(self.uri)

    def register(self, data: bytes, *, trace_id: str = "trace-copy") -> CommandEnvelope:
        """A register_artifact command for ``data`` staged under temp/, as upload_artifact builds it."""
        artifact_id = new_artifact_id()
        staged = Stager(self.uri).stage(data, artifact_id, filename="out.bin")
        manifest = {
            "id": artifact_id,
            "trace_id": trace_id,
            "created_by": "agent-test",
            "artifact_type": "report",
            "uri": staged.uri,
            "size_bytes": staged.size_bytes,
            "checksum": staged.checksum,
        }
        return command("register_artifact", manifest=manifest)

    def orphan(self, envelope: CommandEnvelope) -> Path:
        """What the worker's temp_orphans does to a temp file older than an hour: move it to orphans/temp/."""
        staged = staged_path(envelope)
        target = self.path / "orphans" / "temp" / staged.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged, target)
        return target


def staged_path(envelope: CommandEnvelope) -> Path:
    return Path(envelope.data.params["manifest"]["uri"].removeprefix("file://"))


def replayer(buffer: SpillBuffer, transport: FakeTransport, files: StorageFiles | None) -> Replayer:
    async def send(envelope: CommandEnvelope):  # type: ignore[no-untyped-def]
        return await transport.call(envelope, routing_key="cmd.storage.any", timeout_s=1, expire=False)

    return Replayer(buffer, send, files)


def worker_registering(root: Root, seen: list[bytes]) -> FakeTransport:
    """A fake worker that, like the real one, needs the file at the manifest's URI and moves it to artifacts/."""

    def respond(envelope: CommandEnvelope):  # type: ignore[no-untyped-def]
        manifest = envelope.data.params["manifest"]
        source = Path(manifest["uri"].removeprefix("file://"))
        data = source.read_bytes()  # raises (and fails the test) when the file is not there
        assert "sha256:" + hashlib.sha256(data).hexdigest() == manifest["checksum"]
        dest = root.path / "artifacts" / manifest["trace_id"] / source.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, dest)
        seen.append(data)
        return result({"artifact_id": manifest["id"], "uri": dest.as_uri(), "registered": True})

    return FakeTransport(respond)
