"""``storage-buffer``: look into an agent's spill buffer, replay it, or clear parts of it.

    storage-buffer status [--dir D] [--json]
    storage-buffer replay [--dir D] [--amqp-url URL] [--exchange NAME] [--timeout S]
    storage-buffer purge  [--dir D] (--failed | --quarantine | --pending | --all) [--yes]

Settings not given as options come from the environment like the client's (``STORAGE_BUFFER_DIR``,
``AMQP_URL``, ``STORAGE_EXCHANGE``, ...). ``replay`` exits 0 when the buffer is empty afterwards, 1 when
the worker stayed unreachable (items remain), 2 when another client holds the replay lock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from buffer.replay import Replayer, ReplayReport
from buffer.restage import StorageFiles
from buffer.rpc import Reply, RpcTransport
from buffer.settings import ClientSettings
from buffer.spill import BufferStatus, SpillBuffer
from contracts import CommandEnvelope


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storage-buffer", description="Inspect and replay an agent's spill buffer.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--dir", type=Path, default=None, help="buffer directory (default: STORAGE_BUFFER_DIR or .data/buffer)"
        )
        return p

    status = with_dir(
        sub.add_parser("status", help="what waits, what failed, what was quarantined (sets aside invalid files)")
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")

    replay = with_dir(sub.add_parser("replay", help="send the buffered commands now, oldest first"))
    replay.add_argument("--amqp-url", default=None, help="broker (default: AMQP_URL)")
    replay.add_argument("--exchange", default=None, help="exchange (default: STORAGE_EXCHANGE or ai_team)")
    replay.add_argument("--timeout", type=float, default=None, help="seconds to wait for each reply")
    replay.add_argument(
        "--storage-root",
        default=None,
        help="where registrations' files are put back from their copies when gone (default: STORAGE_ROOT)",
    )
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")

    purge = with_dir(sub.add_parser("purge", help="delete buffered, failed or quarantined files"))
    purge.add_argument("--failed", action="store_true", help="commands the worker refused")
    purge.add_argument("--quarantine", action="store_true", help="files that were not valid commands")
    purge.add_argument("--pending", action="store_true", help="commands still waiting (they are lost!)")
    purge.add_argument("--all", action="store_true", help="all of the above")
    purge.add_argument("--yes", action="store_true", help="confirm deleting pending commands")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, object] = {}
    if args.dir is not None:
        overrides["buffer_dir"] = args.dir
    for option, field in (
        ("amqp_url", "amqp_url"),
        ("exchange", "exchange"),
        ("timeout", "call_timeout_s"),
        ("storage_root", "storage_root"),
    ):
        if getattr(args, option, None) is not None:
            overrides[field] = getattr(args, option)
    settings = ClientSettings(**overrides)  # type: ignore[arg-type]
    if args.command == "status":
        return _status(settings, as_json=args.json)
    if args.command == "replay":
        return asyncio.run(_replay(settings, progress=not args.no_progress))
    return _purge(settings, args)


def _open(settings: ClientSettings) -> SpillBuffer:
    return SpillBuffer(
        settings.buffer_dir, max_items=settings.buffer_max_items, max_bytes=settings.buffer_max_bytes
    ).open()


def _status(settings: ClientSettings, *, as_json: bool) -> int:
    status = _open(settings).status()
    if as_json:
        print(json.dumps(status.as_dict(), indent=2))
    else:
        print(_format_status(status))
    return 0


def _format_status(status: BufferStatus) -> str:
    lines = [
        f"buffer     {status.directory}",
        f"pending    {status.pending} commands, {status.pending_bytes} bytes"
        f" (limits {status.max_items} / {status.max_bytes} bytes)",
    ]
    for action, count in sorted(status.by_action.items()):
        lines.append(f"  {action:<20} {count}")
    if status.oldest is not None:
        lines.append(f"oldest     {status.oldest.isoformat()}")
        lines.append(f"newest     {status.newest.isoformat() if status.newest else '-'}")
    lines.append(f"quarantine {status.quarantined} files")
    lines.append(f"failed     {len(status.failed)} commands")
    for failed in status.failed:
        code = failed.error.get("code", "?")
        lines.append(f"  {failed.name}  {failed.action or '?'}  {code}: {failed.error.get('message', '')}")
    return "\n".join(lines)


async def _replay(settings: ClientSettings, *, progress: bool) -> int:
    buffer = await asyncio.to_thread(_open, settings)
    user_id = settings.broker_user_id()
    transport = RpcTransport(
        settings.amqp_url, settings.exchange, connect_timeout_s=settings.connect_timeout_s, user_id=user_id
    )

    async def send(envelope: CommandEnvelope) -> Reply:
        context = envelope.data.context or {}
        node = envelope.data.target_node or context.get("target_node")
        return await transport.call(
            envelope, routing_key=settings.routing_key(node), timeout_s=settings.call_timeout_s, expire=False
        )

    total = len(await asyncio.to_thread(buffer.entries))
    bar = tqdm(total=total, unit="cmd", desc="replay", disable=not progress or total == 0, file=sys.stderr)

    def advance(done: int, _: int) -> None:
        bar.update(done - bar.n)

    try:
        report = await Replayer(buffer, send, StorageFiles(settings.storage_root), user_id=user_id).run(
            progress=advance
        )
    finally:
        bar.close()
        await transport.close()
    print(_format_report(report))
    if report.busy:
        return 2
    return 0 if report.complete and report.remaining == 0 else 1


def _format_report(report: ReplayReport) -> str:
    if report.busy:
        return f"another client is replaying this buffer ({report.remaining} pending); nothing done"
    text = f"replayed {report.sent}, failed {report.failed}, remaining {report.remaining}"
    if report.stopped is not None:
        text += f"; stopped: {report.stopped.code.value}: {report.stopped.message}"
    return text


def _purge(settings: ClientSettings, args: argparse.Namespace) -> int:
    pending, failed, quarantine = args.pending or args.all, args.failed or args.all, args.quarantine or args.all
    if not (pending or failed or quarantine):
        print("purge what? give --failed, --quarantine, --pending or --all", file=sys.stderr)
        return 2
    if pending and not args.yes:
        print("--pending deletes commands that were never delivered; add --yes to confirm", file=sys.stderr)
        return 2
    counts = _open(settings).purge(pending=pending, failed=failed, quarantine=quarantine)
    print(", ".join(f"{name}: {count} removed" for name, count in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
