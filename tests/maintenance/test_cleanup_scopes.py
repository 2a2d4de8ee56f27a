"""The cleanup action, scope by scope: what disappears, what stays, and that a dry run changes nothing."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from contracts import utc_now
from service.settings import Settings
from tests.support.artifacts import manifest_for, new_artifact_id, write_temp
from tests.support.broker import ADMIN_AMQP
from tests.support.bus import Bus, error, output
from tests.support.maintenance import (
    age_file,
    ago,
    artifacts,
    cleanup,
    count,
    database,
    execute,
    inbox,
    insert_uploading,
    messages,
    scalar_rows,
    thread_labels,
    threads,
)

READER = {"requester_trace_id": "trace-1"}


async def _register(bus: Bus, root: Path, data: bytes = b"report bytes", **overrides: Any) -> dict[str, Any]:
    return output(await bus.call("register_artifact", {"manifest": manifest_for(root, data, **overrides)}))


def _path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


async def test_cleanup_is_admin_only(bus: Bus) -> None:
    """An agent that is not in STORAGE_ADMINS is refused with PERMISSION_DENIED naming the action."""
    refused = error(await bus.call("cleanup", {"dry_run": True}, context={"requester_id": "some-agent"}))
    assert refused["code"] == "PERMISSION_DENIED" and refused["details"]["action"] == "cleanup"


async def test_unknown_scope_is_invalid_argument(bus: Bus) -> None:
    """A scope name the contract does not know is INVALID_ARGUMENT naming the scopes field."""
    failure = error(await bus.call("cleanup", {"scopes": ["everything"]}, amqp=ADMIN_AMQP))
    assert failure["code"] == "INVALID_ARGUMENT" and "scopes" in str(failure["details"])


async def test_only_the_requested_scopes_run(bus: Bus) -> None:
    """Naming scopes runs just those: the reply counts exactly them."""
    counts = await cleanup(bus, "inbox", "temp_orphans")
    assert set(counts) == {"inbox", "temp_orphans"}


async def test_retention_sets_the_expiry_from_its_grammar(bus: Bus, storage_root: Path, settings: Settings) -> None:
    """'12h', 'P30D' and 'infinite' give an expiry that far from registration, or none."""
    expected = {"12h": timedelta(hours=12), "P30D": timedelta(days=30), "infinite": None}
    for retention, delta in expected.items():
        artifact_id = (await _register(bus, storage_root, uuid.uuid4().bytes, retention=retention))["artifact_id"]
        query = select(artifacts.c.registered_at, artifacts.c.expires_at).where(artifacts.c.id == artifact_id)
        async with database(settings) as conn:
            registered_at, expires_at = (await conn.execute(query)).one()
        assert (None if expires_at is None else expires_at - registered_at) == delta, retention


async def test_expired_artifact_is_removed_and_its_file_orphaned(
    bus: Bus, storage_root: Path, settings: Settings
) -> None:
    """Past its retention an artifact is NOT_FOUND at once; cleanup then moves its file under orphans/, and a dry
    run moves nothing."""
    expired = await _register(bus, storage_root, b"old report", retention="30d")
    kept = await _register(bus, storage_root, b"new report", retention="30d")
    await execute(
        settings, update(artifacts).where(artifacts.c.id == expired["artifact_id"]).values(expires_at=ago(seconds=1))
    )

    assert (await cleanup(bus, "expired_artifacts", dry_run=True)) == {"expired_artifacts": 1}
    before = error(await bus.call("get_artifact", {"artifact_id": expired["artifact_id"]}, context=READER))
    assert before["code"] == "NOT_FOUND" and before["details"]["reason"] == "expired"
    assert _path(expired["uri"]).exists()

    assert (await cleanup(bus, "expired_artifacts")) == {"expired_artifacts": 1}
    gone = error(await bus.call("get_artifact", {"artifact_id": expired["artifact_id"]}, context=READER))
    assert gone["code"] == "NOT_FOUND"
    assert not _path(expired["uri"]).exists()
    relative = _path(expired["uri"]).relative_to(storage_root)
    assert (storage_root / "orphans" / relative).read_bytes() == b"old report"
    assert output(await bus.call("get_artifact", {"artifact_id": kept["artifact_id"]}, context=READER))
    assert _path(kept["uri"]).exists()


async def test_expired_threads_vanish_for_readers_and_then_from_the_database(bus: Bus, settings: Settings) -> None:
    """A thread past its TTL is NOT_FOUND at once and cleanup removes it with its messages and labels."""
    doomed, alive = f"ttl-{uuid.uuid4().hex}", f"keep-{uuid.uuid4().hex}"
    for thread_id in (doomed, alive):
        await bus.call(
            "save_thread",
            {
                "thread_id": thread_id,
                "messages": [{"role": "user", "content": "hi"}] * 1,
                "ttl_seconds": 60,
                "metadata": {"k": "v"},
            },
        )
    await execute(settings, update(threads).where(threads.c.id == doomed).values(expires_at=ago(seconds=1)))
    assert error(await bus.call("get_thread", {"thread_id": doomed}))["code"] == "NOT_FOUND"
    assert doomed not in {
        t["thread_id"] for t in output(await bus.call("list_threads", {"metadata": {"k": "v"}}))["threads"]
    }

    assert (await cleanup(bus, "expired_threads", dry_run=True)) == {"expired_threads": 1}
    assert await count(settings, messages, messages.c.thread_id == doomed) == 1
    assert (await cleanup(bus, "expired_threads")) == {"expired_threads": 1}
    assert await count(settings, threads, threads.c.id == doomed) == 0
    assert await count(settings, messages, messages.c.thread_id == doomed) == 0
    assert await count(settings, thread_labels, thread_labels.c.thread_id == doomed) == 0
    assert output(await bus.call("get_thread", {"thread_id": alive}))["thread"]["message_count"] == 1


async def test_purge_deleted_removes_old_soft_deleted_rows_only(bus: Bus, settings: Settings) -> None:
    """Soft-deleted threads and trimmed messages older than the purge window are removed; recent ones stay."""
    deleted, trimmed = f"del-{uuid.uuid4().hex}", f"trim-{uuid.uuid4().hex}"
    await bus.call("save_thread", {"thread_id": deleted, "messages": [{"role": "user", "content": "x"}] * 1})
    await bus.call("delete_thread", {"thread_id": deleted})
    saved = output(
        await bus.call(
            "save_thread",
            {
                "thread_id": trimmed,
                "messages": [{"role": "user", "content": f"m{i}"} for i in range(4)],
                "max_messages": 1,
            },
        )
    )
    assert saved["trimmed"] == 3
    assert (await cleanup(bus, "purge_deleted")) == {"purge_deleted": 0}

    old = ago(days=31)
    await execute(
        settings,
        update(threads).where(threads.c.id == deleted).values(deleted_at=old),
        update(messages)
        .where(messages.c.id.in_([uuid.UUID(i) for i in saved["message_ids"][:2]]))
        .values(deleted_at=old),
    )
    assert (await cleanup(bus, "purge_deleted", dry_run=True)) == {"purge_deleted": 3}
    assert (await cleanup(bus, "purge_deleted")) == {"purge_deleted": 3}
    assert error(await bus.call("get_thread", {"thread_id": deleted, "include_deleted": True}))["code"] == "NOT_FOUND"
    remaining = output(await bus.call("get_thread", {"thread_id": trimmed, "include_deleted": True}))["messages"]
    assert [m["content"] for m in remaining] == ["m2", "m3"]


async def test_temp_orphans_moves_only_old_temp_files(bus: Bus, storage_root: Path) -> None:
    """A temp file untouched for over an hour moves to orphans/temp/; a fresh upload stays where it is."""
    old = write_temp(storage_root, b"abandoned upload")
    fresh = write_temp(storage_root, b"upload in progress")
    age_file(old, hours=2)
    assert (await cleanup(bus, "temp_orphans", dry_run=True)) == {"temp_orphans": 1}
    assert old.exists()
    assert (await cleanup(bus, "temp_orphans")) == {"temp_orphans": 1}
    assert not old.exists() and fresh.exists()
    assert (storage_root / "orphans" / "temp" / old.name).read_bytes() == b"abandoned upload"


async def test_orphan_files_moves_unreferenced_artifact_files_older_than_a_day(bus: Bus, storage_root: Path) -> None:
    """A file under artifacts/ that no row points at goes to orphans/ after a day; registered files never do."""
    registered = await _register(bus, storage_root, b"kept forever")
    kept = _path(registered["uri"])
    stray = storage_root / "artifacts" / "trace-x" / f"{new_artifact_id()}.bin"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"no row for me")
    loose = storage_root / "artifacts" / "manual" / "notes.txt"
    loose.parent.mkdir(parents=True, exist_ok=True)
    loose.write_bytes(b"dropped by hand")
    recent = storage_root / "artifacts" / "manual" / "today.txt"
    recent.write_bytes(b"too young to judge")
    for path in (kept, stray, loose):
        age_file(path, days=2)

    assert (await cleanup(bus, "orphan_files", dry_run=True)) == {"orphan_files": 2}
    assert (await cleanup(bus, "orphan_files")) == {"orphan_files": 2}
    assert kept.read_bytes() == b"kept forever" and recent.exists()
    assert not stray.exists() and not loose.exists()
    assert (storage_root / "orphans" / "artifacts" / "manual" / "notes.txt").exists()


async def test_old_orphans_are_deleted_after_a_week(bus: Bus, storage_root: Path) -> None:
    """Orphans older than seven days are deleted for good; younger ones stay."""
    folder = storage_root / "orphans" / "temp"
    folder.mkdir(parents=True, exist_ok=True)
    ancient, young = folder / "ancient.bin", folder / "young.bin"
    ancient.write_bytes(b"x")
    young.write_bytes(b"y")
    age_file(ancient, days=8)
    age_file(young, days=1)
    assert (await cleanup(bus, "old_orphans")) == {"old_orphans": 1}
    assert not ancient.exists() and young.exists()


async def test_orphaned_files_start_their_week_when_moved(bus: Bus, storage_root: Path) -> None:
    """A temp file that was months old when orphaned is not deleted by old_orphans right away."""
    old = write_temp(storage_root, b"ancient upload")
    age_file(old, days=90)
    assert (await cleanup(bus, "temp_orphans", "old_orphans")) == {"temp_orphans": 1, "old_orphans": 0}
    assert (storage_root / "orphans" / "temp" / old.name).exists()


async def test_missing_files_fail_the_artifact(bus: Bus, storage_root: Path, settings: Settings) -> None:
    """A completed artifact whose file was lost is reported failed after the next cleanup."""
    registered = await _register(bus, storage_root, b"soon lost")
    _path(registered["uri"]).unlink()
    await execute(
        settings,
        update(artifacts).where(artifacts.c.id == registered["artifact_id"]).values(registered_at=ago(hours=2)),
    )
    assert (await cleanup(bus, "missing_files", dry_run=True)) == {"missing_files": 1}
    assert (await cleanup(bus, "missing_files")) == {"missing_files": 1}
    got = output(await bus.call("get_artifact", {"artifact_id": registered["artifact_id"]}, context=READER))
    assert got["manifest"]["status"] == "failed"
    assert (await cleanup(bus, "missing_files")) == {"missing_files": 0}


async def test_missing_file_still_in_temp_is_moved_into_place(bus: Bus, storage_root: Path, settings: Settings) -> None:
    """When the lost file's bytes are still in temp/ (same size and sha256) cleanup puts them in place instead."""
    registered = await _register(bus, storage_root, b"bytes that never moved")
    final = _path(registered["uri"])
    final.rename(storage_root / "temp" / "leftover.part")
    await execute(
        settings,
        update(artifacts).where(artifacts.c.id == registered["artifact_id"]).values(registered_at=ago(hours=2)),
    )
    assert (await cleanup(bus, "missing_files")) == {"missing_files": 1}
    assert final.read_bytes() == b"bytes that never moved"
    got = output(await bus.call("get_artifact", {"artifact_id": registered["artifact_id"]}, context=READER))
    assert got["manifest"]["status"] == "completed"


async def test_stale_uploading_rows_become_failed(bus: Bus, storage_root: Path, settings: Settings) -> None:
    """An artifact left 'uploading' for over an hour is failed; a recent one is left alone."""
    rows = []
    for age in (timedelta(hours=2), timedelta(minutes=5)):
        manifest = manifest_for(storage_root, uuid.uuid4().bytes, status="uploading")
        rows.append(manifest["id"])
        await insert_uploading(settings, manifest, at=utc_now() - age, created_by="importer")
    assert (await cleanup(bus, "stale_uploading")) == {"stale_uploading": 1}
    statuses = [
        output(await bus.call("get_artifact", {"artifact_id": artifact_id}, context=READER))["manifest"]["status"]
        for artifact_id in rows
    ]
    assert statuses == ["failed", "uploading"]


async def test_inbox_records_past_retention_are_purged(bus: Bus, settings: Settings) -> None:
    """Inbox records older than STORAGE_INBOX_RETENTION are purged; recent ones stay."""
    await bus.call("save_thread", {"thread_id": f"a-{uuid.uuid4().hex}", "messages": []})
    await bus.call("save_thread", {"thread_id": f"b-{uuid.uuid4().hex}", "messages": []})
    oldest, recent = (await scalar_rows(settings, select(inbox.c.id).order_by(inbox.c.created_at)))[:2]
    await execute(settings, update(inbox).where(inbox.c.id == oldest).values(created_at=ago(days=8)))
    assert (await cleanup(bus, "inbox", dry_run=True)) == {"inbox": 1}
    assert (await cleanup(bus, "inbox")) == {"inbox": 1}
    assert await count(settings, inbox, inbox.c.id == oldest) == 0
    assert await count(settings, inbox, inbox.c.id == recent) == 1


def _age_link(path: Path, **delta: float) -> None:
    """Make a link itself look old (its own mtime; what it points at keeps its own)."""
    moment = time.time() - timedelta(**delta).total_seconds()
    os.utime(path, (moment, moment), follow_symlinks=False)


async def test_no_scope_ever_follows_a_link(bus: Bus, storage_root: Path, settings: Settings) -> None:
    """Links planted in temp/, artifacts/ and orphans/, and one standing in for an expired artifact's file, are
    moved or deleted as links by every scope; the registered file they all point at keeps its place and bytes."""
    victim_out = await _register(bus, storage_root, b"the victim's report", retention="infinite")
    victim = _path(victim_out["uri"])
    victim_stat = victim.stat()
    in_temp = storage_root / "temp" / "bait.bin"
    stray = storage_root / "artifacts" / "trace-x" / f"{new_artifact_id()}.bin"
    stray.parent.mkdir(parents=True, exist_ok=True)
    old_orphan = storage_root / "orphans" / "temp" / "old-link.bin"
    old_orphan.parent.mkdir(parents=True, exist_ok=True)
    for link in (in_temp, stray, old_orphan):
        link.symlink_to(victim)
    _age_link(in_temp, hours=2)
    _age_link(stray, days=2)
    _age_link(old_orphan, days=8)
    expiring = await _register(bus, storage_root, b"expiring", retention="30d")
    expiring_file = _path(expiring["uri"])
    expiring_file.unlink()
    expiring_file.symlink_to(victim)
    await execute(
        settings, update(artifacts).where(artifacts.c.id == expiring["artifact_id"]).values(expires_at=ago(seconds=1))
    )

    counts = await cleanup(bus, "temp_orphans", "orphan_files", "old_orphans", "expired_artifacts", "missing_files")
    assert counts["temp_orphans"] == 1 and counts["orphan_files"] == 1 and counts["old_orphans"] == 1
    assert counts["expired_artifacts"] == 1
    assert victim.read_bytes() == b"the victim's report", "no scope moved or deleted what a link points at"
    assert victim.stat().st_ino == victim_stat.st_ino and victim.stat().st_mtime == victim_stat.st_mtime
    assert (storage_root / "orphans" / "temp" / "bait.bin").is_symlink()
    assert (storage_root / "orphans" / stray.relative_to(storage_root)).is_symlink()
    assert (storage_root / "orphans" / expiring_file.relative_to(storage_root)).is_symlink()
    assert not os.path.lexists(old_orphan)
    got = output(await bus.call("get_artifact", {"artifact_id": victim_out["artifact_id"]}, context=READER))
    assert got["manifest"]["status"] == "completed"


async def test_a_link_in_place_of_a_file_is_a_missing_file(bus: Bus, storage_root: Path, settings: Settings) -> None:
    """A completed artifact whose file was replaced by a link is missing its file: failed, the link's target
    untouched."""
    victim = write_temp(storage_root, b"not the artifact's bytes", "victim.bin")
    registered = await _register(bus, storage_root, b"replaced by a link")
    final = _path(registered["uri"])
    final.unlink()
    final.symlink_to(victim)
    await execute(
        settings,
        update(artifacts).where(artifacts.c.id == registered["artifact_id"]).values(registered_at=ago(hours=2)),
    )
    assert (await cleanup(bus, "missing_files")) == {"missing_files": 1}
    got = output(await bus.call("get_artifact", {"artifact_id": registered["artifact_id"]}, context=READER))
    assert got["manifest"]["status"] == "failed"
    assert victim.read_bytes() == b"not the artifact's bytes"
