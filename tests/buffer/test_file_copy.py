"""A buffered registration keeps a copy of its file: byte accounting, eviction, quarantine, putting it back."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from buffer import (
    BrokerUnavailable,
    Buffered,
    SpillBuffer,
    StorageClient,
    Unavailable,
)
from buffer.restage import StorageFiles
from contracts import CommandEnvelope
from tests.support.fake_transport import FakeTransport, command, error, result
from tests.support.file_copy import Root, replayer, staged_path, worker_registering


def spill_all(buffer: SpillBuffer, root: Root, envelopes: list[CommandEnvelope]) -> list[Any]:
    return [buffer.spill(env, "UNAVAILABLE: down", root.files.file_copy(env)) for env in envelopes]


def quarantined(buffer: SpillBuffer) -> list[str]:
    return sorted(p.name for p in buffer.folder("quarantine").iterdir() if not p.name.endswith(".reason.json"))


@pytest.fixture
def root(tmp_path: Path) -> Root:
    return Root(tmp_path / "storage")


def test_registration_is_spilled_with_a_copy_that_counts_toward_the_byte_limit(tmp_path: Path, root: Root) -> None:
    """The copy sits beside its command, holds the file's bytes and is counted in the buffer's size."""
    data = os.urandom(50_000)
    buffer = SpillBuffer(tmp_path / "buf").open()
    [entry] = spill_all(buffer, root, [root.register(data)])
    assert entry.blob is not None and entry.blob.read_bytes() == data
    assert entry.size == entry.path.stat().st_size + len(data)
    assert buffer.status().pending_bytes == entry.size
    assert buffer.counters.copies_kept == 1
    item = buffer.load(buffer.entries()[0])
    assert item is not None and item.blob == entry.blob and item.blob_info is not None
    assert list(buffer.folder("tmp").iterdir()) == []


def test_other_commands_keep_no_copy(tmp_path: Path, root: Root) -> None:
    """A save_thread has no file: it is spilled alone, as before."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    envelope = command("save_thread", thread_id="t")
    assert root.files.file_copy(envelope) is None
    entry = buffer.spill(envelope)
    assert entry.blob is None and [p.suffix for p in buffer.folder("pending").iterdir()] == [".cmd"]


def test_byte_limit_evicts_the_oldest_command_with_its_copy(tmp_path: Path, root: Root) -> None:
    """With room for about two copies, a third registration evicts the oldest command and its copy together."""
    envelopes = [root.register(os.urandom(40_000)) for _ in range(3)]
    buffer = SpillBuffer(tmp_path / "buf", max_bytes=100_000).open()
    entries = spill_all(buffer, root, envelopes)
    assert all(e.blob is not None for e in entries)
    assert [e.path.name for e in buffer.entries()] == [e.path.name for e in entries[1:]]
    assert not entries[0].path.exists() and not entries[0].blob.exists()
    assert buffer.counters.evicted == 1
    assert buffer.status().pending_bytes <= 100_000


def test_file_larger_than_the_buffer_is_kept_without_a_copy(
    tmp_path: Path, root: Root, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that cannot fit the byte limit leaves the command buffered alone, with a warning saying so."""
    buffer = SpillBuffer(tmp_path / "buf", max_bytes=20_000).open()
    envelope = root.register(os.urandom(30_000))
    with caplog.at_level(logging.WARNING, logger="buffer.spill"):
        [entry] = spill_all(buffer, root, [envelope])
    assert entry.blob is None and entry.path.exists()
    assert any("does not fit" in r.getMessage() for r in caplog.records)
    assert list(buffer.folder("tmp").iterdir()) == []


def test_file_that_is_not_the_manifests_is_not_copied(tmp_path: Path, root: Root) -> None:
    """When the staged file no longer hashes to the manifest's checksum, no copy is kept (it could not help)."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    envelope = root.register(b"the real result")
    staged_path(envelope).write_bytes(b"the real resulT")
    [entry] = spill_all(buffer, root, [envelope])
    assert entry.blob is None and list(buffer.folder("tmp").iterdir()) == []


@pytest.mark.parametrize(
    "uri",
    ["file:///etc/passwd", "s3://bucket/storage/temp/x.bin", "temp/../../outside.bin", "orphans/temp/x.bin"],
)
def test_uri_outside_the_clients_storage_root_gets_no_copy(root: Root, uri: str) -> None:
    """Only files under the client's own root's temp/ or artifacts/ are read: anything else is left alone."""
    envelope = root.register(b"x")
    envelope.data.params["manifest"]["uri"] = uri
    assert root.files.file_copy(envelope) is None


def test_without_a_storage_root_nothing_is_copied(tmp_path: Path, root: Root) -> None:
    """A client with no storage root buffers registrations alone, as before."""
    envelope = root.register(b"x")
    assert StorageFiles(None).file_copy(envelope) is None
    assert StorageFiles("").file_copy(envelope) is None


def test_removing_and_failing_an_item_take_its_copy_along(tmp_path: Path, root: Root) -> None:
    """A replayed item leaves no copy behind; a refused one keeps its copy in failed/ for the operator."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    _, refused = spill_all(buffer, root, [root.register(b"done"), root.register(b"refused")])
    items = [buffer.load(e) for e in buffer.entries()]
    assert items[0] is not None and items[1] is not None
    buffer.remove(items[0])
    buffer.fail(items[1], {"code": "PERMISSION_DENIED", "message": "no"})
    assert list(buffer.folder("pending").iterdir()) == []
    assert (buffer.folder("failed") / refused.blob.name).read_bytes() == b"refused"
    assert len(buffer.status().failed) == 1
    assert buffer.purge(failed=True) == {"failed": 1}
    assert list(buffer.folder("failed").iterdir()) == []


def test_copy_without_its_command_is_quarantined_on_open(tmp_path: Path, root: Root) -> None:
    """A copy whose command never made it to disk (a crash in between) is set aside and counted, never replayed."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    kept, lost = spill_all(buffer, root, [root.register(b"kept"), root.register(b"lost")])
    lost.path.unlink()
    reopened = SpillBuffer(tmp_path / "buf").open()
    assert [e.path for e in reopened.entries()] == [kept.path]
    assert reopened.counters.quarantined == 1 and reopened.status().quarantined == 1
    [moved] = quarantined(reopened)
    assert moved.endswith(lost.blob.name)


def _flip_a_byte(blob: Path) -> None:
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))


def _cut(blob: Path) -> None:
    blob.write_bytes(blob.read_bytes()[:-1])


def _remove(blob: Path) -> None:
    blob.unlink()


def _grow(blob: Path) -> None:
    blob.write_bytes(blob.read_bytes() + b"\0")


@pytest.mark.parametrize("damage", [_flip_a_byte, _cut, _remove, _grow], ids=lambda f: f.__name__)
def test_item_whose_copy_is_damaged_is_quarantined_on_open(tmp_path: Path, root: Root, damage) -> None:  # type: ignore[no-untyped-def]
    """A command whose copy is missing, cut, grown or no longer hashes to the checksum goes to quarantine/
    with its copy, counted once; its neighbours stay pending."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    entries = spill_all(buffer, root, [root.register(os.urandom(5000)) for _ in range(3)])
    damage(entries[1].blob)
    reopened = SpillBuffer(tmp_path / "buf").open()
    assert [e.path for e in reopened.entries()] == [entries[0].path, entries[2].path]
    assert reopened.counters.quarantined == 1 and reopened.status().quarantined == 1
    names = quarantined(reopened)
    assert any(n.endswith(entries[1].path.name) for n in names)
    [note] = [p for p in reopened.folder("quarantine").iterdir() if p.name.endswith(".reason.json")]
    assert "file copy" in json.loads(note.read_text())["reason"]


def test_header_naming_a_copy_of_other_bytes_is_quarantined(tmp_path: Path, root: Root) -> None:
    """An item whose header claims a copy that is not the manifest's checksum is not a valid item."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    [entry] = spill_all(buffer, root, [root.register(b"abc")])
    raw = entry.path.read_bytes()
    newline = raw.index(b"\n")
    header = json.loads(raw[:newline])
    header["blob"]["sha256"] = "0" * 64
    entry.path.write_bytes(json.dumps(header).encode() + raw[newline:])
    reopened = SpillBuffer(tmp_path / "buf").open()
    assert reopened.entries() == [] and reopened.counters.quarantined == 1
    assert sorted(p.suffix for p in reopened.folder("quarantine").iterdir() if p.suffix != ".json") == [
        ".blob",
        ".cmd",
    ]


async def test_replay_puts_an_orphaned_file_back_and_registers_it_once(tmp_path: Path, root: Root) -> None:
    """After the worker's temp_orphans moved the staged files away, replay puts each back from its copy at the
    same URI before sending; every command goes once, the bytes are right, and no copy is left."""
    datas = [os.urandom(10_000 + i) for i in range(3)]
    envelopes = [root.register(d) for d in datas]
    buffer = SpillBuffer(tmp_path / "buf").open()
    spill_all(buffer, root, envelopes)
    orphaned = [root.orphan(env) for env in envelopes[:2]]  # the third is still in temp/
    seen: list[bytes] = []
    transport = worker_registering(root, seen)
    report = await replayer(buffer, transport, root.files).run()
    assert (report.sent, report.failed, report.remaining) == (3, 0, 0)
    assert [s.envelope.id for s in transport.sent] == [e.id for e in envelopes]
    assert seen == datas
    assert buffer.counters.restaged == 2
    assert [p.read_bytes() for p in orphaned] == datas[:2]  # the worker's orphan copies are left to the worker
    assert list(buffer.folder("pending").iterdir()) == [] and list(buffer.folder("tmp").iterdir()) == []
    assert list((root.path / "temp").iterdir()) == []


def test_file_put_back_is_as_readable_as_a_staged_one(tmp_path: Path, root: Root) -> None:
    """The worker (maybe another user) reads a file put back exactly as it reads one the agent staged."""
    envelope = root.register(b"payload")
    staged_mode = staged_path(envelope).stat().st_mode & 0o777
    buffer = SpillBuffer(tmp_path / "buf").open()
    spill_all(buffer, root, [envelope])
    root.orphan(envelope)
    item = buffer.load(buffer.entries()[0])
    assert item is not None and root.files.ensure(item) is True
    assert staged_path(envelope).read_bytes() == b"payload"
    assert staged_path(envelope).stat().st_mode & 0o777 == staged_mode
    assert root.files.ensure(item) is False, "a file already there is not written again"


async def test_stored_not_found_is_overcome_with_the_file_back_under_a_new_envelope(tmp_path: Path, root: Root) -> None:
    """When the worker had already answered NOT_FOUND for the envelope (a queued copy ran while the file was away)
    and replays that stored answer, replay puts the file back and registers it under a new envelope id and key:
    registered once, with its bytes, nothing in failed/."""
    envelope = root.register(b"queued through a second outage")
    buffer = SpillBuffer(tmp_path / "buf").open()
    spill_all(buffer, root, [envelope])
    root.orphan(envelope)
    seen: list[bytes] = []
    registering = worker_registering(root, seen)
    not_found = error("NOT_FOUND", "file not found")
    not_found.data.error.details = {"uri": envelope.data.params["manifest"]["uri"]}
    inbox = {envelope.data.idempotency_key: not_found}

    def respond(env: CommandEnvelope):  # type: ignore[no-untyped-def]
        if env.data.idempotency_key not in inbox:
            inbox[env.data.idempotency_key] = registering.respond(env)
        return inbox[env.data.idempotency_key]

    transport = FakeTransport(respond)
    report = await replayer(buffer, transport, root.files).run()
    assert (report.sent, report.failed, report.remaining) == (1, 0, 0)
    first, second = (s.envelope for s in transport.sent)
    assert first == envelope
    assert second.id != envelope.id and second.data.idempotency_key != envelope.data.idempotency_key
    assert second.data.params == envelope.data.params
    assert seen == [b"queued through a second outage"]
    assert buffer.status().failed == []


async def test_without_files_replay_sends_as_before(tmp_path: Path, root: Root) -> None:
    """A replayer with no storage root sends the command as it is (the worker then finds no file)."""
    envelope = root.register(b"payload")
    buffer = SpillBuffer(tmp_path / "buf").open()
    spill_all(buffer, root, [envelope])
    root.orphan(envelope)
    transport = FakeTransport(lambda env: result())
    await replayer(buffer, transport, None).run()
    assert len(transport.sent) == 1 and not staged_path(envelope).exists()


async def test_copy_damaged_after_open_is_quarantined_not_sent(tmp_path: Path, root: Root) -> None:
    """A copy that no longer hashes to the checksum when it is needed sends its command to quarantine/, writes
    nothing at the URI, and replay goes on with the next command."""
    envelopes = [root.register(b"first result"), root.register(b"second result")]
    buffer = SpillBuffer(tmp_path / "buf").open()
    entries = spill_all(buffer, root, envelopes)
    root.orphan(envelopes[0])
    _flip_a_byte(entries[0].blob)
    seen: list[bytes] = []
    report = await replayer(buffer, worker_registering(root, seen), root.files).run()
    assert seen == [b"second result"] and (report.sent, report.remaining) == (1, 0)
    assert buffer.counters.quarantined == 1 and buffer.status().quarantined == 1
    assert not staged_path(envelopes[0]).exists()
    assert [p.name for p in (root.path / "temp").iterdir()] == []


async def test_unreachable_storage_root_stops_the_pass(tmp_path: Path, root: Root) -> None:
    """When the file cannot be put back (the root is not writable), replay stops there and keeps the command."""
    envelope = root.register(b"payload")
    buffer = SpillBuffer(tmp_path / "buf").open()
    spill_all(buffer, root, [envelope])
    root.orphan(envelope)
    temp = root.path / "temp"
    temp.rmdir()
    temp.write_bytes(b"a file where the temp/ folder should be")
    transport = FakeTransport(lambda env: result())
    report = await replayer(buffer, transport, root.files).run()
    assert isinstance(report.stopped, Unavailable) and report.remaining == 1
    assert transport.sent == []


async def test_duplicate_put_back_is_removed_after_a_stored_reply(tmp_path: Path, root: Root) -> None:
    """When the worker had registered the file before (its reply was lost), the file put back for the replay is a
    duplicate: once the stored reply says where the artifact lives, it is removed from temp/."""
    envelope = root.register(b"registered before the reply was lost")
    buffer = SpillBuffer(tmp_path / "buf").open()
    spill_all(buffer, root, [envelope])
    final = root.path / "artifacts" / "trace-copy" / staged_path(envelope).name
    final.parent.mkdir(parents=True)
    os.replace(staged_path(envelope), final)  # the worker placed it; the reply never came back
    transport = FakeTransport(lambda env: result({"uri": final.as_uri(), "registered": True}))
    report = await replayer(buffer, transport, root.files).run()
    assert report.sent == 1 and buffer.counters.restaged == 1
    assert not staged_path(envelope).exists() and final.read_bytes() == b"registered before the reply was lost"


async def test_client_reports_the_copy_in_buffered(tmp_path: Path) -> None:
    """upload_artifact with the worker unreachable returns Buffered naming the copy of the bytes it kept."""
    transport = FakeTransport(lambda env: BrokerUnavailable("connection refused"))

    async def no_sleep(_: float) -> None:
        return None

    client = StorageClient(
        transport=lambda s, on_event: transport,
        sleep=no_sleep,
        trace_id="trace-u",
        buffer_dir=tmp_path / "buf",
        storage_root=(tmp_path / "root").as_uri(),
        heartbeat_s=3600,
    )
    async with client:
        out = await client.upload_artifact(b"agent result", artifact_type="report")
    assert isinstance(out, Buffered)
    assert out.file_copy is not None and out.file_copy.read_bytes() == b"agent result"
