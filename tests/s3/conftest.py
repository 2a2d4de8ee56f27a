"""An S3-compatible server for the tests: moto in server mode on loopback, with a bucket per test."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from service.settings import Settings
from service.transport.worker import Worker
from tests.support.bus import Bus
from tests.support.workers import make_settings

PREFIX = "team/prod"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 on 127.0.0.1; credentials and endpoint come from the usual AWS environment variables."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.delenv("AWS_PROFILE", raising=False)
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture
def agent_fs(s3_endpoint: str) -> Iterator[object]:
    """The agent's own S3 client (a separate instance: nothing the worker caches is shared with it)."""
    import fsspec
    from s3fs import S3FileSystem

    # fsspec caches filesystem instances by their arguments, not by the endpoint in the environment: an
    # instance left by another test's (stopped) S3 server must not be handed to this test's worker.
    S3FileSystem.clear_instance_cache()
    try:
        yield fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False)
    finally:
        S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_root(agent_fs: object) -> str:
    """``s3://<fresh bucket>/team/prod``."""
    bucket = f"storage-test-{uuid.uuid4().hex[:12]}"
    agent_fs.mkdir(bucket)  # type: ignore[attr-defined]
    return f"s3://{bucket}/{PREFIX}"


@pytest.fixture
def settings(amqp_url: str, database_url: str, tmp_path: Path, s3_root: str) -> Settings:
    """The root fixtures' worker and bus, with files on the S3 bucket instead of a local folder."""
    return make_settings(amqp_url, database_url, tmp_path).model_copy(update={"storage_root": s3_root})


@pytest.fixture
def s3_worker(worker: Worker) -> Worker:
    return worker


@pytest.fixture
def s3_bus(bus: Bus) -> Bus:
    return bus
