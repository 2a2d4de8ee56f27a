"""Case 8: the client's buffer directory damaged in every way a disk or a person can damage it.

An agent buffers 40 registrations while the broker is unreachable. Then, before it starts again, its
buffer is damaged: one record cut to a single byte, one emptied to 0 bytes, one overwritten with garbage,
a foreign file dropped in with an item's name and another with a name of its own. The restarted client
must start anyway, quarantine exactly the damaged files (each with a reason), and replay every intact
command to the live worker, which registers each exactly once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from buffer import Buffered
from tests.support.client_load import ClientLoad, client_for
from tests.support.private_broker import spare_ports
from tests.support.store_view import StoreView
from tests.support.tally import Tally
from tests.support.worker_process import SpawnWorker

pytestmark = pytest.mark.faults

BUFFERED = 40
SETTLE_S = 60.0


def damage(pending: Path, victims: list[Path]) -> dict[str, str]:
    """Damage the buffer in each way; returns file name → what was done to it."""
    cut, empty, garbage = victims
    done = {}
    cut.write_bytes(cut.read_bytes()[:1])
    done[cut.name] = "cut to 1 byte"
    empty.write_bytes(b"")
    done[empty.name] = "0 bytes"
    garbage.write_bytes(os.urandom(max(64, garbage.stat().st_size)))
    done[garbage.name] = "garbage"
    lookalike = pending / ("0" * 19 + "1-foreign.cmd")
    lookalike.write_text(json.dumps({"specversion": "1.0", "type": "ai.team.command", "id": "x", "data": {}}))
    done[lookalike.name] = "foreign file with an item's name"
    stranger = pending / "notes.txt"
    stranger.write_text("someone's notes, not a buffered command\n")
    done[stranger.name] = "foreign file"
    return done


async def test_damaged_buffer_is_quarantined_and_the_rest_replayed_once(
    spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    """A client whose buffer directory was damaged still starts, sets the damaged files aside with a
    reason, and replays every intact command, each registered exactly once."""
    tally = Tally("case8 damaged buffer")
    worker = await spawn_worker()
    buffer_dir = tmp_path / "buffer"
    unreachable = f"amqp://guest:guest@127.0.0.1:{spare_ports(1)[0]}/"
    async with client_for(worker.env, buffer_dir, amqp_url=unreachable, retries=0, connect_timeout_s=1.0) as offline:
        load = ClientLoad(offline, BUFFERED, tag="damage", concurrency=8)
        await load.run()
    tally.commands = BUFFERED
    buffered = {i: r for i, r in load.outcomes.items() if isinstance(r, Buffered)}
    if len(buffered) != BUFFERED:
        tally.unexpected.append(f"only {len(buffered)} of {BUFFERED} calls were buffered while offline")

    pending = buffer_dir / "pending"
    by_path = {r.path.name: load.ids[i] for i, r in buffered.items()}
    victims = sorted(pending.glob("*.cmd"))[5:8]
    destroyed = {by_path[v.name] for v in victims}
    damaged = damage(pending, victims)

    started = time.monotonic()
    async with client_for(worker.env, buffer_dir) as client:
        replayed = ClientLoad(client, 0, tag="replay")
        emptied = await replayed.settle(time.monotonic() + SETTLE_S)
        status = await client.status()
    if emptied is None:
        tally.unexpected.append(f"{status.pending} commands still pending {SETTLE_S:.0f}s after the restart")

    quarantine = buffer_dir / "quarantine"
    notes = {p.name.removesuffix(".reason.json"): json.loads(p.read_text()) for p in quarantine.glob("*.reason.json")}
    set_aside = {name for name in damaged if any(q.endswith(name) for q in notes)}
    tally.unexpected += [f"{name} ({how}) not quarantined" for name, how in damaged.items() if name not in set_aside]
    tally.unexpected += [f"quarantined an intact item: {q}" for q in notes if not any(q.endswith(n) for n in damaged)]
    tally.unexpected += [f"no reason given for {q}" for q, note in notes.items() if not note.get("reason")]
    if status.failed:
        tally.unexpected.append(f"{len(status.failed)} commands refused by the worker: {status.failed[:2]}")

    store = StoreView(worker.folder / "storage.db")
    rows = store.artifacts()
    keys = store.inbox_by_key("register_artifact")
    intact = [load.ids[i] for i in buffered if load.ids[i] not in destroyed]
    tally.lost += [artifact_id for artifact_id in intact if artifact_id not in rows]
    tally.unexpected += [f"{a}: a destroyed record took effect" for a in destroyed if a in rows]
    tally.unexpected += [f"{a}: registered but never sent" for a in set(rows) - set(load.ids)]
    tally.duplicated += [f"idempotency key {k}: {n} inbox records" for k, n in keys.items() if n > 1]
    tally.figures.update(
        buffered=len(buffered),
        damaged=len(damaged),
        quarantined=len(notes),
        replayed=len(intact),
        registered=len(rows),
        restart_to_empty_s=round((emptied or time.monotonic()) - started, 2),
    )
    tally.check()
