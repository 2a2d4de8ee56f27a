"""Uploading to an S3 storage root (moto's S3 server): the same staging as on a local disk."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import pytest

from buffer import Stager, new_artifact_id

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")


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
