"""The spill buffer on disk: order, limits with oldest-first eviction, quarantine of bad files, the replay lock."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from buffer import SpillBuffer, SpillFailed
from buffer._format import encode
from tests.support.fake_transport import command


def pending_ids(buffer: SpillBuffer) -> list[str]:
    return [item.envelope.id for entry in buffer.entries() if (item := buffer.load(entry)) is not None]


def quarantined(buffer: SpillBuffer) -> list[Path]:
    return sorted(p for p in buffer.folder("quarantine").iterdir() if not p.name.endswith(".reason.json"))


def test_spilled_commands_come_back_in_order_and_intact(tmp_path: Path) -> None:
    """What is spilled is read back byte-for-byte the same envelope, oldest first."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    commands = [command() for _ in range(5)]
    for envelope in commands:
        buffer.spill(envelope, "UNAVAILABLE: down")
    items = [buffer.load(entry) for entry in buffer.entries()]
    assert [i.envelope for i in items if i] == commands
    assert all(i and i.reason == "UNAVAILABLE: down" for i in items)
    assert list(buffer.folder("tmp").iterdir()) == []


def test_sequence_continues_after_reopen(tmp_path: Path) -> None:
    """Commands spilled after a restart are replayed after the ones already waiting."""
    first = SpillBuffer(tmp_path / "buf").open()
    older = [command() for _ in range(3)]
    for envelope in older:
        first.spill(envelope)
    second = SpillBuffer(tmp_path / "buf").open()
    newer = command()
    second.spill(newer)
    assert pending_ids(second) == [e.id for e in [*older, newer]]


def test_item_limit_evicts_oldest_first_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """At 3 items, spilling 5 keeps the newest 3, drops the 2 oldest, warns and counts each eviction."""
    buffer = SpillBuffer(tmp_path / "buf", max_items=3).open()
    commands = [command() for _ in range(5)]
    with caplog.at_level(logging.WARNING, logger="buffer.spill"):
        for envelope in commands:
            buffer.spill(envelope)
    assert pending_ids(buffer) == [e.id for e in commands[2:]]
    assert buffer.counters.evicted == 2
    warnings = [r.getMessage() for r in caplog.records if "evicted the oldest" in r.getMessage()]
    assert len(warnings) == 2
    assert commands[0].id in warnings[0] and commands[1].id in warnings[1]


def test_byte_limit_evicts_oldest_until_the_new_one_fits(tmp_path: Path) -> None:
    """With room for about two commands by size, a third pushes out the oldest and only the oldest."""
    commands = [command("save_thread", thread_id=f"t{i}", metadata={"pad": "x" * 400}) for i in range(3)]
    size = len(encode(commands[0], None))
    buffer = SpillBuffer(tmp_path / "buf", max_bytes=2 * size + size // 2).open()
    for envelope in commands:
        buffer.spill(envelope)
    assert pending_ids(buffer) == [commands[1].id, commands[2].id]
    assert buffer.counters.evicted == 1
    assert buffer.status().pending_bytes <= buffer.max_bytes


def test_command_larger_than_the_buffer_is_refused(tmp_path: Path) -> None:
    """A command bigger than the whole byte limit raises SpillFailed and evicts nothing."""
    buffer = SpillBuffer(tmp_path / "buf", max_bytes=600).open()
    small = command()
    buffer.spill(small)
    with pytest.raises(SpillFailed) as raised:
        buffer.spill(command("save_thread", thread_id="t", metadata={"pad": "x" * 2000}))
    assert raised.value.retryable
    assert pending_ids(buffer) == [small.id]


def _cut_to_one_byte(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(300))


def _cut_in_body(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])


def _flipped_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))


def _foreign_json(path: Path) -> None:
    path.write_text(json.dumps({"hello": "not a buffer file"}) + "\n{}")


@pytest.mark.parametrize(
    "damage", [_cut_to_one_byte, _empty, _garbage, _cut_in_body, _flipped_byte, _foreign_json], ids=lambda f: f.__name__
)
def test_damaged_file_is_quarantined_on_open(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    """A damaged item is moved to quarantine/ with a reason and counted; its neighbours stay pending."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    commands = [command() for _ in range(3)]
    entries = [buffer.spill(envelope) for envelope in commands]
    damage(entries[1].path)

    reopened = SpillBuffer(tmp_path / "buf").open()
    assert pending_ids(reopened) == [commands[0].id, commands[2].id]
    assert reopened.counters.quarantined == 1
    [moved] = quarantined(reopened)
    assert moved.name.endswith(entries[1].path.name)
    note = json.loads(moved.with_name(moved.name + ".reason.json").read_text())
    assert note["reason"] and note["original"] == str(entries[1].path)
    assert reopened.status().quarantined == 1


def test_file_that_is_not_ours_is_quarantined(tmp_path: Path) -> None:
    """A stray file dropped into pending/ never crashes the client and never gets replayed."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    kept = command()
    buffer.spill(kept)
    (buffer.folder("pending") / "notes.txt").write_text("operator notes")
    (buffer.folder("pending") / "subdir").mkdir()
    reopened = SpillBuffer(tmp_path / "buf").open()
    assert pending_ids(reopened) == [kept.id]
    assert {p.name.split("-", 2)[-1] for p in quarantined(reopened)} == {"notes.txt", "subdir"}


def test_read_action_in_a_buffer_file_is_not_replayed(tmp_path: Path) -> None:
    """A well-formed file holding a command the buffer never keeps (a read) is quarantined, not sent."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    entry = buffer.spill(command())
    entry.path.write_bytes(encode(command("get_artifact", artifact_id="x"), None))
    assert pending_ids(SpillBuffer(tmp_path / "buf").open()) == []


def test_damage_after_open_is_caught_at_load(tmp_path: Path) -> None:
    """A file damaged while the client runs is quarantined when replay reads it, and skipped."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    entry = buffer.spill(command())
    _garbage(entry.path)
    assert buffer.load(entry) is None
    assert buffer.entries() == []
    assert buffer.counters.quarantined == 1


def test_half_written_temp_of_a_dead_writer_is_quarantined(tmp_path: Path) -> None:
    """A temp file left by a killed writer is set aside on open; one being written by a live writer is not."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead_pid = int(dead.stdout)
    (buffer.folder("tmp") / f"00000000000000000001-x.cmd.{dead_pid}.tmp").write_bytes(b'{"magic":')
    live = buffer.folder("tmp") / f"00000000000000000002-y.cmd.{os.getpid()}.tmp"
    live.write_bytes(b"in progress")
    reopened = SpillBuffer(tmp_path / "buf").open()
    assert reopened.counters.quarantined == 1
    assert live.exists()
    assert reopened.entries() == []


def test_replay_lock_excludes_another_process(tmp_path: Path) -> None:
    """While another process replays a buffer directory, this one is told the lock is taken."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
            str(buffer.directory / "replay.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with buffer.replay_lock() as mine:
            assert mine is False
    finally:
        holder.communicate("")
    with buffer.replay_lock() as mine:
        assert mine is True


def test_status_counts_and_purge(tmp_path: Path) -> None:
    """Status reports pending commands per action; purge empties only the folders asked for."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    buffer.spill(command("save_thread", thread_id="a"))
    buffer.spill(command("delete_thread", thread_id="a"))
    failed = buffer.spill(command("save_thread", thread_id="b"))
    item = buffer.load(failed)
    assert item is not None
    buffer.fail(item, {"code": "ABORTED", "message": "version mismatch"})
    status = buffer.status()
    assert status.pending == 2 and status.by_action == {"save_thread": 1, "delete_thread": 1}
    assert [(f.action, f.error["code"]) for f in status.failed] == [("save_thread", "ABORTED")]
    assert buffer.purge(failed=True) == {"failed": 1}
    assert buffer.status().failed == [] and buffer.status().pending == 2
    assert buffer.purge(pending=True) == {"pending": 2}
    assert buffer.status().pending == 0
