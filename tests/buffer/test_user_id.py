"""The client's ``user_id`` option: commands carry the broker-validated AMQP ``user_id``, spilled ones too.

That property is the only identity the worker grants admin rights to (docs/contract.md §3); RabbitMQ accepts it
only when it names the connection's own user, so the option defaults to the user of the client's AMQP URL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from buffer import Buffered, PermissionDenied, Replayer, SpillBuffer, StorageClient
from buffer.settings import ClientSettings
from contracts import CommandEnvelope
from service.transport.worker import Worker
from tests.support.broker import broker_user
from tests.support.client import client_settings
from tests.support.fake_transport import FakeTransport, command, result


def test_the_option_names_the_user_of_the_amqp_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """``user_id=True`` is the URL's user, a string is itself, off by default; STORAGE_USER_ID reads the same."""
    url = "amqp://ops%2Dadmin:secret@broker.example:5672/"
    assert ClientSettings(_env_file=None, amqp_url=url).broker_user_id() is None  # type: ignore[call-arg]
    assert ClientSettings(_env_file=None, amqp_url=url, user_id=True).broker_user_id() == "ops-admin"  # type: ignore[call-arg]
    assert ClientSettings(_env_file=None, amqp_url=url, user_id="ops-admin").broker_user_id() == "ops-admin"  # type: ignore[call-arg]
    monkeypatch.setenv("STORAGE_USER_ID", "true")
    assert ClientSettings(_env_file=None, amqp_url=url).broker_user_id() == "ops-admin"  # type: ignore[call-arg]
    monkeypatch.setenv("STORAGE_USER_ID", "off")
    assert ClientSettings(_env_file=None, amqp_url=url).broker_user_id() is None  # type: ignore[call-arg]


async def test_a_spilled_command_is_replayed_only_under_its_own_user_id(tmp_path: Path) -> None:
    """A command spilled with a user_id goes out only from a replayer with that user_id, one spilled without it
    only from a replayer without one; the others stay pending, counted as skipped."""
    buffer = SpillBuffer(tmp_path / "buf").open()
    as_ops, anonymous = command(), command()
    buffer.spill(as_ops, user_id="ops-admin")
    buffer.spill(anonymous)
    assert [buffer.load(e).user_id for e in buffer.entries()] == ["ops-admin", None]  # type: ignore[union-attr]
    transport = FakeTransport(lambda env: result())

    async def send(envelope: CommandEnvelope):  # type: ignore[no-untyped-def]
        return await transport.call(envelope, routing_key="cmd.storage.any", timeout_s=1, expire=False)

    first = await Replayer(buffer, send, user_id="ops-admin").run()
    assert [s.envelope.id for s in transport.sent] == [as_ops.id]
    assert (first.sent, first.skipped, first.remaining) == (1, 1, 1)
    second = await Replayer(buffer, send).run()
    assert [s.envelope.id for s in transport.sent] == [as_ops.id, anonymous.id]
    assert (second.sent, second.skipped, second.remaining) == (1, 0, 0)


async def test_a_client_with_user_id_acts_as_its_broker_user(worker: Worker, buffer_dir: Path) -> None:
    """With ``user_id=True`` the broker user owns what the client registers and may run admin actions (the test
    worker lists it in STORAGE_ADMINS); without it the same client is its agent_id and is refused."""
    user = broker_user(worker.settings.amqp_url)
    assert user in worker.settings.admins
    async with StorageClient(**client_settings(worker, buffer_dir)) as plain:
        with pytest.raises(PermissionDenied):
            await plain.cleanup(dry_run=True)
    async with StorageClient(**client_settings(worker, buffer_dir, user_id=True), trace_id="trace-uid") as storage:
        out = await storage.upload_artifact(b"as the broker user", artifact_type="report")
        assert not isinstance(out, Buffered)
        assert out.manifest.owner == user
        assert (await storage.cleanup(dry_run=True)).dry_run is True


async def test_a_command_spilled_with_user_id_is_replayed_with_it(
    worker: Worker, buffer_dir: Path, closed_amqp_url: str
) -> None:
    """An upload buffered while the broker was unreachable is registered on replay as the broker user it was
    sent as; a client without the option on the same buffer leaves it alone."""
    user = broker_user(worker.settings.amqp_url)
    down = client_settings(worker, buffer_dir, amqp_url=closed_amqp_url, connect_timeout_s=2.0, user_id=True)
    async with StorageClient(**down, trace_id="trace-uid") as storage:
        uploaded = await storage.upload_artifact(b"spilled as the broker user", artifact_type="report")
    assert isinstance(uploaded, Buffered)

    async with StorageClient(**client_settings(worker, buffer_dir)) as plain:
        report = await plain.replay()
        assert (report.sent, report.skipped, report.remaining) == (0, 1, 1)

    done = asyncio.Event()
    async with StorageClient(**client_settings(worker, buffer_dir, user_id=True), trace_id="trace-uid") as storage:
        storage.on_replay.append(lambda r: done.set() if r.remaining == 0 else None)
        await asyncio.wait_for(done.wait(), 30)
        got = await storage.get_artifact(uploaded.params["manifest"]["id"])
    assert got.manifest.status == "completed" and got.manifest.owner == user
