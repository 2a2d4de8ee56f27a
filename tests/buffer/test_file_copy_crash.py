"""SIGKILL while a registration and its file copy are being spilled: a whole pair or nothing that replays wrongly."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import signal
from pathlib import Path

import pytest

from buffer import SpillBuffer
from tests.support.agents import agent_process, killed_after
from tests.support.copy_proc import SIZE
from tests.support.file_copy import Root, replayer, worker_registering

KILLS = 12

pytestmark = pytest.mark.faults


async def _spill_until_killed(args: list[str], *, stall: bool, delay_s: float) -> None:
    """Run the spilling agent; kill it while a copy stalls half-written, or ``delay_s`` after it is ready."""
    async with agent_process("tests.support.copy_proc", *args, stdin=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        if stall:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line.strip() == b"stalled", f"{line!r} {await proc.stderr.read()!r}"
            proc.send_signal(signal.SIGKILL)
        elif not await killed_after(proc, delay_s):
            raise AssertionError(f"agent stopped on its own: {(await proc.stderr.read()).decode()[-2000:]}")


async def test_sigkill_during_copy_leaves_whole_pairs_or_counted_quarantine(tmp_path: Path) -> None:
    """Killed 12 times while spilling registrations with file copies (half of them with a copy stalled
    half-written), the buffer afterwards holds only whole command+copy pairs: every acknowledged one is there
    and intact, every half-written copy is quarantined and counted, and after the worker's temp_orphans moved
    every staged file away, replay registers each pending command once with its exact bytes."""
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    root = Root(tmp_path / "storage")
    buffer_dir = tmp_path / "buffer"
    ack_log = tmp_path / "acked.txt"
    common = ["--root", root.uri, "--buffer-dir", str(buffer_dir), "--ack-log", str(ack_log)]
    stalled = 0
    for kill in range(KILLS):
        if kill % 2 == 0:
            stalled += 1
            await _spill_until_killed([*common, "--stall-at", str(rng.randint(1, 3))], stall=True, delay_s=0)
        else:
            await _spill_until_killed(common, stall=False, delay_s=rng.uniform(0.05, 0.5))

    buffer = SpillBuffer(buffer_dir, max_bytes=1 << 40).open()
    acked = [line for line in ack_log.read_text().split("\n") if line]
    assert len(acked) >= stalled, f"too few spills acknowledged to mean anything (seed {seed})"
    assert list(buffer.folder("tmp").iterdir()) == [], f"half-written files left in tmp/ (seed {seed})"
    status = buffer.status()
    assert status.quarantined >= stalled, f"{status.quarantined} quarantined, {stalled} copies were cut (seed {seed})"
    pending = [buffer.load(entry) for entry in buffer.entries()]
    assert all(item is not None for item in pending), f"a pending item was not whole (seed {seed})"
    names = {p.name for p in buffer.folder("pending").iterdir()}
    assert len(names) == 2 * len(pending), f"a copy without its command, or the reverse, is pending (seed {seed})"
    by_id: dict[str, bytes] = {}
    for item in pending:
        assert item is not None and item.blob is not None and item.blob_info is not None
        data = item.blob.read_bytes()
        assert len(data) == SIZE
        assert "sha256:" + hashlib.sha256(data).hexdigest() == item.envelope.data.params["manifest"]["checksum"]
        by_id[item.envelope.data.params["manifest"]["id"]] = data
    missing = set(acked) - set(by_id)
    assert not missing, f"{len(missing)} acknowledged commands are not pending (seed {seed})"

    for item in pending:  # an outage longer than an hour: the worker's temp_orphans moves every staged file
        assert item is not None
        staged = Path(item.envelope.data.params["manifest"]["uri"].removeprefix("file://"))
        target = root.path / "orphans" / "temp" / staged.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged, target)
    seen: list[bytes] = []
    report = await replayer(buffer, worker_registering(root, seen), root.files).run()
    assert (report.sent, report.failed, report.remaining) == (len(pending), 0, 0), f"{report} (seed {seed})"
    assert seen == [by_id[item.envelope.data.params["manifest"]["id"]] for item in pending if item is not None]
