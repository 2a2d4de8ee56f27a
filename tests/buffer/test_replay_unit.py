"""Replay against a fake worker: order, what is removed, what fails for good, where a pass stops."""

from __future__ import annotations

from pathlib import Path

from buffer import BrokerUnavailable, Replayer, SpillBuffer
from contracts import CommandEnvelope
from tests.support.fake_transport import FakeTransport, command, error, result


def filled(tmp_path: Path, count: int) -> tuple[SpillBuffer, list[CommandEnvelope]]:
    buffer = SpillBuffer(tmp_path / "buf").open()
    commands = [command() for _ in range(count)]
    for envelope in commands:
        buffer.spill(envelope)
    return buffer, commands


def replayer(buffer: SpillBuffer, transport: FakeTransport) -> Replayer:
    async def send(envelope: CommandEnvelope):  # type: ignore[no-untyped-def]
        return await transport.call(envelope, routing_key="cmd.storage.any", timeout_s=1, expire=False)

    return Replayer(buffer, send)


async def test_replay_sends_in_order_with_original_envelopes_and_empties(tmp_path: Path) -> None:
    """Every buffered command goes out once, oldest first, with its original envelope; the buffer ends empty."""
    buffer, commands = filled(tmp_path, 5)
    transport = FakeTransport(lambda env: result({"ok": True}))
    report = await replayer(buffer, transport).run()
    assert [s.envelope for s in transport.sent] == commands
    assert report.sent == 5 and report.remaining == 0 and report.complete
    assert buffer.entries() == []


async def test_permanent_error_moves_item_to_failed_and_continues(tmp_path: Path) -> None:
    """A command the worker refuses for good lands in failed/ with the error; the next ones still go."""
    buffer, commands = filled(tmp_path, 3)
    refused = commands[1].id
    transport = FakeTransport(lambda env: error("ALREADY_EXISTS", "taken") if env.id == refused else result())
    report = await replayer(buffer, transport).run()
    assert (report.sent, report.failed, report.remaining) == (2, 1, 0)
    [failed] = buffer.status().failed
    assert refused.replace("-", "") in failed.name.replace("-", "")
    assert failed.error["code"] == "ALREADY_EXISTS" and failed.error["message"] == "taken"


async def test_unavailable_stops_the_pass_and_keeps_the_rest_in_order(tmp_path: Path) -> None:
    """When the worker says it is unavailable, replay stops there; that item and the later ones stay, in order."""
    buffer, commands = filled(tmp_path, 4)
    answers = iter([result(), error("UNAVAILABLE", "db down", retryable=True)])
    transport = FakeTransport(lambda env: next(answers))
    report = await replayer(buffer, transport).run()
    assert (report.sent, report.remaining) == (1, 3)
    assert report.stopped is not None and report.stopped.code.value == "UNAVAILABLE"
    assert len(transport.sent) == 2
    remaining = [buffer.load(e) for e in buffer.entries()]
    assert [i.envelope.id for i in remaining if i] == [c.id for c in commands[1:]]


async def test_no_answer_stops_the_pass(tmp_path: Path) -> None:
    """A broker that cannot be reached stops the pass after the first try; nothing is lost or failed."""
    buffer, _ = filled(tmp_path, 3)
    transport = FakeTransport(lambda env: BrokerUnavailable("connection refused"))
    report = await replayer(buffer, transport).run()
    assert (report.sent, report.failed, report.remaining) == (0, 0, 3)
    assert isinstance(report.stopped, BrokerUnavailable)
    assert len(transport.sent) == 1


async def test_second_replayer_on_same_directory_does_nothing(tmp_path: Path) -> None:
    """While one replayer works through a buffer, a second one on the same directory sends nothing."""
    buffer, commands = filled(tmp_path, 3)
    other = SpillBuffer(tmp_path / "buf").open()
    other_transport = FakeTransport(lambda env: result())
    inner_reports = []

    async def respond_and_race(env: CommandEnvelope):  # type: ignore[no-untyped-def]
        inner_reports.append(await replayer(other, other_transport).run())
        return result()

    async def send(envelope: CommandEnvelope):  # type: ignore[no-untyped-def]
        return await respond_and_race(envelope)

    report = await Replayer(buffer, send).run()
    assert report.sent == 3
    assert other_transport.sent == []
    assert all(r.busy for r in inner_reports) and len(inner_reports) == 3
    assert len(commands) == 3


async def test_progress_is_reported_per_item(tmp_path: Path) -> None:
    """The progress callback sees every settled item out of the total (what the CLI's bar shows)."""
    buffer, _ = filled(tmp_path, 4)
    seen: list[tuple[int, int]] = []
    await replayer(buffer, FakeTransport(lambda env: result())).run(
        progress=lambda done, total: seen.append((done, total))
    )
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
