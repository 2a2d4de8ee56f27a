"""Issue 21's acceptance: an agent watching a trace gets every registration in it exactly once across worker SIGKILLs.

One agent registers ``REGISTRATIONS`` artifacts in a trace while another watches the trace from before the
first. The worker dies three times mid-stream: twice right after a commit, before the reply and before the
change's event went out (the ``after_commit`` fault hook: the event waits in the outbox for the next start),
once by a SIGKILL at a random moment. Each time it is restarted on the same database. The watcher's broker
connection stays up throughout; it must see each registered artifact once, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from contracts import Change
from tests.support.client_load import ClientLoad, client_for
from tests.support.tally import Tally
from tests.support.worker_process import SpawnWorker

pytestmark = pytest.mark.faults

REGISTRATIONS = 400
SEEN_WITHIN_S = 120.0


async def test_watch_gets_every_registration_once_across_worker_sigkills(
    spawn_worker: SpawnWorker, database_url: str, tmp_path: Path
) -> None:
    tally = Tally("watch across worker SIGKILL x3")
    rng = random.Random()
    first, second = rng.randrange(20, 80), rng.randrange(20, 80)
    kill_at = rng.randrange(REGISTRATIONS // 2, REGISTRATIONS * 3 // 4)
    worker = await spawn_worker(
        faults=f"after_commit@{first}", DATABASE_URL=database_url, STORAGE_MIGRATE_ON_START="true"
    )
    seen: list[Change] = []
    async with (
        client_for(worker.env, tmp_path / "producer", call_timeout_s=10.0) as producer,
        client_for(worker.env, tmp_path / "watcher", agent_id="agent-watcher") as watcher,
    ):
        trace = producer.trace_id
        assert trace is not None
        start = (await watcher.changes_since(trace_id=trace)).cursor
        async with watcher.watch(cursor=start, trace_id=trace, kinds=["artifact_registered"]) as changes:
            load = ClientLoad(producer, REGISTRATIONS, tag="watch-kill", concurrency=16)
            every_one = asyncio.Event()

            async def watch() -> None:
                waiting_for = set(load.ids)
                async for change in changes:
                    seen.append(change)
                    waiting_for.discard(change.artifact_id or "")
                    if not waiting_for:
                        every_one.set()

            watching = asyncio.create_task(watch())
            tally.commands = REGISTRATIONS

            async def killer() -> None:
                await worker.wait_exit(60)  # the after_commit hook
                tally.kills += 1
                await worker.start(faults=f"after_commit@{second}")
                await worker.wait_exit(60)
                tally.kills += 1
                await worker.start()
                await load.answered(kill_at)
                await worker.kill()
                tally.kills += 1
                await worker.start()

            await asyncio.wait_for(asyncio.gather(load.run(), killer()), SEEN_WITHIN_S * 2)
            assert await load.settle(time.monotonic() + SEEN_WITHIN_S) is not None, "the buffer never emptied"
            registered = {m.id async for m in producer.iter_artifacts(trace_id=trace, page_size=500)}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(every_one.wait(), SEEN_WITHIN_S)
            await asyncio.sleep(1.0)  # anything still on its way (a late copy) has time to show up
            watching.cancel()
            dropped, catch_ups = changes.duplicates, changes.catch_ups

    counts = Counter(c.artifact_id for c in seen)
    tally.lost = sorted(set(load.ids) - set(counts))
    tally.duplicated = sorted(a for a, n in counts.items() if n > 1)
    tally.unexpected = sorted(set(counts) - set(load.ids)) + sorted(set(load.ids) - registered)
    ids = [c.change_id for c in seen]
    tally.figures.update(
        database=database_url.split(":", 1)[0],
        seen=len(seen),
        registered=len(registered),
        duplicates_dropped=dropped,
        out_of_order=sum(1 for a, b in itertools.pairwise(ids) if b < a),
        catch_up_pages=catch_ups,
        kill_after=[first, second, kill_at],
    )
    tally.check()
    assert tally.kills == 3
