"""``STORAGE_ROOT=s3://bucket/prefix``: the register flow, presigned URLs, cleanup and recovery on S3."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.request
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import CleanupScope, utc_now
from service.maintenance.cleanup import run_cleanup
from service.maintenance.recovery import recover
from service.transport.worker import Worker
from tests.support.artifacts import new_artifact_id
from tests.support.broker import ADMIN_AMQP
from tests.support.bus import Bus, error, output


def _upload(fs: Any, root: str, data: bytes, name: str | None = None) -> str:
    """What the client library does: put the bytes under ``<root>/temp/`` and return their URI."""
    uri = f"{root}/temp/{name or uuid.uuid4().hex + '.txt'}"
    fs.pipe(uri, data)
    return uri


def _manifest(uri: str, data: bytes, **overrides: Any) -> dict[str, Any]:
    manifest = {
        "id": new_artifact_id(),
        "trace_id": "trace-s3",
        "created_by": "agent-test",
        "artifact_type": "report",
        "content_type": "text/plain",
        "uri": uri,
        "size_bytes": len(data),
        "checksum": "sha256:" + hashlib.sha256(data).hexdigest(),
    }
    manifest.update(overrides)
    return manifest


async def _register(bus: Bus, manifest: dict[str, Any]) -> dict[str, Any]:
    return await bus.call("register_artifact", {"manifest": manifest}, context={"requester_id": "agent-test"})


async def test_register_copies_into_artifacts_and_deletes_the_upload(s3_bus: Bus, s3_root: str, agent_fs: Any) -> None:
    """A registered upload ends under artifacts/<trace>/<id><ext> in the bucket, and temp/ is empty again."""
    data = b"quarterly risk report on s3"
    source = _upload(agent_fs, s3_root, data)
    manifest = _manifest(source, data)
    result = output(await _register(s3_bus, manifest))
    expected = f"{s3_root}/artifacts/trace-s3/{manifest['id']}.txt"
    assert result["registered"] is True and result["uri"] == expected
    assert agent_fs.cat(expected) == data
    assert not agent_fs.exists(source)
    stored = output(await s3_bus.call("get_artifact", {"artifact_id": manifest["id"]}, amqp=ADMIN_AMQP))
    assert stored["manifest"]["uri"] == expected and stored["manifest"]["status"] == "completed"
    again = output(await _register(s3_bus, manifest))
    assert again["registered"] is False and again["already_exists"] is True
    stats = output(await s3_bus.call("get_stats", {}, amqp=ADMIN_AMQP))
    assert stats["files"] == 1 and stats["artifacts"]["total"] == 1


@pytest.mark.parametrize(
    "where",
    [
        "other-bucket/{prefix}/temp/x.txt",
        "{bucket}/other-prefix/temp/x.txt",
        "{bucket}/{prefix}/temp/../../other/x.txt",
        "{bucket}/{prefix}/orphans/x.txt",
    ],
)
async def test_uris_outside_the_bucket_prefix_are_refused(s3_bus: Bus, s3_root: str, agent_fs: Any, where: str) -> None:
    """An S3 URI outside <bucket>/<prefix>/temp or /artifacts is PERMISSION_DENIED, whatever it holds."""
    bucket, _, prefix = s3_root.removeprefix("s3://").partition("/")
    uri = "s3://" + where.format(bucket=bucket, prefix=prefix)
    failure = error(await _register(s3_bus, _manifest(uri, b"x")))
    assert failure["code"] == "PERMISSION_DENIED", failure


async def test_missing_wrong_size_and_wrong_checksum(s3_bus: Bus, s3_root: str, agent_fs: Any) -> None:
    """The file checks hold on S3: missing is NOT_FOUND, size and checksum mismatches are INVALID_ARGUMENT."""
    missing = error(await _register(s3_bus, _manifest(f"{s3_root}/temp/never-uploaded.txt", b"x")))
    assert missing["code"] == "NOT_FOUND"
    data = b"twelve bytes"
    sized = _manifest(_upload(agent_fs, s3_root, data), data, size_bytes=len(data) + 1)
    assert error(await _register(s3_bus, sized))["details"]["field"] == "manifest.size_bytes"
    source = _upload(agent_fs, s3_root, data)
    bad = _manifest(source, data, checksum="sha256:" + "0" * 64)
    failure = error(await _register(s3_bus, bad))
    assert failure["code"] == "INVALID_ARGUMENT" and failure["details"]["field"] == "manifest.checksum"
    assert agent_fs.exists(source), "a refused registration leaves the temp file for temp_orphans"


async def test_a_fresh_upload_is_found_after_temp_was_listed(s3_bus: Bus, s3_root: str, agent_fs: Any) -> None:
    """A cleanup walk over temp/ does not leave a stale listing: an upload made just after registers fine."""
    _upload(agent_fs, s3_root, b"an older upload")
    counts = output(await s3_bus.call("cleanup", {"dry_run": True, "scopes": ["temp_orphans"]}, amqp=ADMIN_AMQP))
    assert counts["dry_run"] is True
    data = b"uploaded after the walk"
    result = output(await _register(s3_bus, _manifest(_upload(agent_fs, s3_root, data), data)))
    assert result["registered"] is True


async def test_get_artifact_uri_returns_a_presigned_url_that_downloads(
    s3_bus: Bus, s3_root: str, agent_fs: Any
) -> None:
    """get_artifact_uri on S3 gives a signed HTTP URL with expires_at; fetching it returns the artifact's bytes."""
    data = b"signed download"
    manifest = _manifest(_upload(agent_fs, s3_root, data), data)
    output(await _register(s3_bus, manifest))
    before = utc_now()
    reply = output(
        await s3_bus.call(
            "get_artifact_uri", {"artifact_id": manifest["id"], "expires_in_seconds": 600}, amqp=ADMIN_AMQP
        )
    )
    assert reply["signed"] is True and reply["uri"].startswith("http://127.0.0.1:")
    expires_at = datetime.fromisoformat(reply["expires_at"])
    assert before + timedelta(seconds=590) <= expires_at <= utc_now() + timedelta(seconds=610)

    def fetch() -> bytes:
        with urllib.request.urlopen(reply["uri"], timeout=10) as response:
            return bytes(response.read())

    assert await asyncio.to_thread(fetch) == data


async def test_delete_and_cleanup_move_objects_through_orphans(
    s3_worker: Worker, s3_bus: Bus, s3_root: str, agent_fs: Any
) -> None:
    """On S3, deleted artifacts, stray uploads and unreferenced objects go to orphans/ and leave after a week (a
    deleted artifact's object after the purge window: it may be restored until then)."""
    data = b"soon deleted"
    manifest = _manifest(_upload(agent_fs, s3_root, data), data)
    placed = output(await _register(s3_bus, manifest))["uri"]
    assert output(await s3_bus.call("delete_artifact", {"artifact_id": manifest["id"]}, amqp=ADMIN_AMQP))["deleted"]
    assert not agent_fs.exists(placed)
    assert agent_fs.cat(placed.replace("/artifacts/", "/orphans/artifacts/")) == data

    stray = _upload(agent_fs, s3_root, b"never registered")
    unreferenced = f"{s3_root}/artifacts/trace-x/{new_artifact_id()}.bin"
    agent_fs.pipe(unreferenced, b"no row points here")
    assert s3_worker.services is not None
    later = utc_now() + timedelta(days=2)
    scopes = [CleanupScope.TEMP_ORPHANS, CleanupScope.ORPHAN_FILES]
    counts = await run_cleanup(s3_worker.services, scopes, now=later)
    assert counts == {"temp_orphans": 1, "orphan_files": 1}
    assert not agent_fs.exists(stray) and not agent_fs.exists(unreferenced)
    assert len(agent_fs.find(f"{s3_root}/orphans")) == 3

    gone = await run_cleanup(s3_worker.services, [CleanupScope.OLD_ORPHANS], now=utc_now() + timedelta(days=8))
    assert gone == {"old_orphans": 2}, "the deleted artifact's object waits for a restore until the purge"
    waiting = placed.replace("/artifacts/", "/orphans/artifacts/")
    assert [agent_fs.unstrip_protocol(key) for key in agent_fs.find(f"{s3_root}/orphans")] == [waiting]
    purged = await run_cleanup(s3_worker.services, [CleanupScope.PURGE_DELETED], now=utc_now() + timedelta(days=31))
    assert purged == {"purge_deleted": 1} and agent_fs.find(f"{s3_root}/orphans") == []


def _lose_connection_in(worker: Worker, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the worker's S3 filesystem fail ``method`` the way a dropped connection does."""

    def lost(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("connection to S3 lost")

    assert worker.services is not None
    monkeypatch.setattr(worker.services.files.fs, method, lost)


async def test_crash_between_commit_and_copy_is_repaired_by_recovery(
    s3_worker: Worker, s3_bus: Bus, s3_root: str, agent_fs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the copy after the commit fails, the agent still gets SUCCESS and startup recovery places the file."""
    _lose_connection_in(s3_worker, "copy", monkeypatch)
    data = b"committed, never copied"
    source = _upload(agent_fs, s3_root, data)
    manifest = _manifest(source, data)
    result = output(await _register(s3_bus, manifest))
    assert result["registered"] is True and not agent_fs.exists(result["uri"]) and agent_fs.exists(source)
    monkeypatch.undo()

    summary = await recover(s3_worker.services)
    assert summary["moved_into_place"] == 1
    assert agent_fs.cat(result["uri"]) == data and not agent_fs.exists(source)


async def test_crash_between_copy_and_delete_leaves_only_a_temp_copy_for_cleanup(
    s3_worker: Worker, s3_bus: Bus, s3_root: str, agent_fs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the delete after the copy fails, the artifact is whole; the stale upload is retired by the temp sweep."""
    _lose_connection_in(s3_worker, "rm", monkeypatch)
    data = b"copied, never deleted"
    source = _upload(agent_fs, s3_root, data)
    result = output(await _register(s3_bus, _manifest(source, data)))
    assert agent_fs.cat(result["uri"]) == data and agent_fs.exists(source)
    monkeypatch.undo()

    summary = await recover(s3_worker.services)  # the artifact is whole: nothing to move, nothing failed
    assert summary["moved_into_place"] == 0 and summary["failed_without_file"] == 0
    assert agent_fs.exists(source), "a fresh temp file may be another agent's upload: recovery leaves it"
    swept = await run_cleanup(s3_worker.services, [CleanupScope.TEMP_ORPHANS], now=utc_now() + timedelta(hours=2))
    assert swept == {"temp_orphans": 1} and not agent_fs.exists(source)
    assert agent_fs.cat(result["uri"]) == data


async def test_client_library_uploads_and_registers_on_s3(
    s3_worker: Worker, s3_root: str, agent_fs: Any, tmp_path: Path
) -> None:
    """An agent with STORAGE_ROOT=s3://... uploads through the client library and gets a permanent S3 URI."""
    from buffer import StorageClient

    settings = s3_worker.settings
    async with StorageClient(
        amqp_url=settings.amqp_url,
        exchange=settings.exchange,
        storage_root=s3_root,
        buffer_dir=tmp_path / "buffer",
        agent_id="agent-s3",
    ) as client:
        result = await client.upload_artifact(
            b"from the client", artifact_type="report", trace_id="t-1", filename="r.md"
        )
    assert result.registered is True  # type: ignore[union-attr]
    assert result.uri.startswith(f"{s3_root}/artifacts/t-1/")  # type: ignore[union-attr]
    assert agent_fs.cat(result.uri) == b"from the client"  # type: ignore[union-attr]
    assert agent_fs.find(f"{s3_root}/temp") == []


async def test_verify_checksums_reads_the_bucket(s3_bus: Bus, s3_root: str, agent_fs: Any) -> None:
    """The scrubber reads artifacts' objects through fsspec as it reads local files: a good object is verified,
    one overwritten in the bucket fails as corrupted, one deleted from it counts as missing."""
    uris = []
    for data in (b"kept on s3", b"rotten on s3", b"lost on s3"):
        manifest = _manifest(_upload(agent_fs, s3_root, data), data)
        uris.append(output(await _register(s3_bus, manifest))["uri"])
    agent_fs.pipe(uris[1], b"ROTTEN on s3")
    agent_fs.rm(uris[2])
    counts = output(await s3_bus.call("cleanup", {"scopes": ["verify_checksums"]}, amqp=ADMIN_AMQP))["counts"]
    assert counts == {"verify_checksums": 3}
    listed = output(await s3_bus.call("list_artifacts", {"trace_id": "trace-s3"}, amqp=ADMIN_AMQP))["artifacts"]
    status = {manifest["uri"]: manifest["status"] for manifest in listed}
    assert [status[uri] for uri in uris] == ["completed", "failed", "completed"], "a young missing file waits"
    rotten = next(manifest["id"] for manifest in listed if manifest["uri"] == uris[1])
    got = output(await s3_bus.call("get_artifact", {"artifact_id": rotten}, amqp=ADMIN_AMQP))
    assert got["details"] == {"reason": "corrupted"}
