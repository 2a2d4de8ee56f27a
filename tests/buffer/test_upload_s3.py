"""Uploading to an S3 storage root (moto's S3 server): the same staging as on a local disk."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import moto.server as moto_server
import pytest
import s3fs

from buffer import SpillBuffer, Stager, new_artifact_id
from buffer.restage import StorageFiles
from tests.support.fake_transport import command


@pytest.fixture
def s3_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty bucket on a private moto S3 server, reachable through the usual AWS environment."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # a cached filesystem would still talk to an earlier test's server
    bucket = f"agent-{uuid.uuid4().hex[:8]}"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(bucket)
    try:
        yield f"s3://{bucket}/storage"
    finally:
        server.stop()


def test_stage_to_s3_streams_and_reports_the_s3_uri(s3_root: str) -> None:
    """Bytes staged on S3 land under temp/ with the size and sha256 the manifest will state."""
    data = b"x" * (3 * 1024 * 1024 + 17)
    artifact_id = new_artifact_id()
    staged = Stager(s3_root).stage(data, artifact_id, filename="blob.bin")
    assert staged.uri == f"{s3_root}/temp/{artifact_id}.bin"
    assert staged.size_bytes == len(data)
    assert staged.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert fs.cat_file(staged.uri) == data


def test_registration_on_s3_keeps_a_copy_and_puts_the_object_back(s3_root: str, tmp_path: Path) -> None:
    """A buffered registration of an S3 object keeps its bytes; once the object was moved to orphans/, putting it
    back writes the same bytes at the same URI and leaves no temporary object behind."""
    data = b"s3 payload " * 10_000
    artifact_id = new_artifact_id()
    staged = Stager(s3_root).stage(data, artifact_id, filename="blob.bin")
    manifest = {
        "id": artifact_id,
        "trace_id": "trace-s3",
        "created_by": "agent-test",
        "artifact_type": "report",
        "uri": staged.uri,
        "size_bytes": staged.size_bytes,
        "checksum": staged.checksum,
    }
    envelope = command("register_artifact", manifest=manifest)
    files = StorageFiles(s3_root)
    buffer = SpillBuffer(tmp_path / "buf").open()
    entry = buffer.spill(envelope, "UNAVAILABLE: down", files.file_copy(envelope))
    assert entry.blob is not None and entry.blob.read_bytes() == data

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mv(staged.uri, f"{s3_root}/orphans/temp/{artifact_id}.bin")
    item = buffer.load(buffer.entries()[0])
    assert item is not None
    assert files.ensure(item) is True
    assert fs.cat_file(staged.uri) == data
    assert [p for p in fs.ls(f"{s3_root}/temp") if "restage" in p] == []
    assert files.ensure(item) is False  # already there: nothing written again
