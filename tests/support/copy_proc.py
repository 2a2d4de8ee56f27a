"""A throwaway agent process for the file-copy crash test: spills registrations with copies until it is killed.

    python -m tests.support.copy_proc --root URI --buffer-dir D --ack-log F [--stall-at K]

Each round stages a fresh 256 KiB file under ``<root>/temp/`` and spills a ``register_artifact`` for it with
a copy of its bytes. After ``spill`` returned, the artifact id goes to the ack log (fsynced): that is what the
agent was promised. With ``--stall-at K`` the K-th copy stops after its first chunk, prints ``stalled`` and
waits for a line on stdin that never comes, so the test kills it with half a copy on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import BinaryIO, cast

from buffer import SpillBuffer, Stager, new_artifact_id
from buffer.restage import StorageFiles
from buffer.spill import FileCopy
from contracts import make_command

SIZE = 256 * 1024
CHUNK = 64 * 1024


class StallingReader(io.RawIOBase):
    """Hands out one chunk, then announces it and blocks: the copy is half-written when the process dies."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.reads = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads == 2:
            print("stalled", flush=True)
            sys.stdin.readline()
        return self.inner.read(CHUNK)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--buffer-dir", required=True)
    parser.add_argument("--ack-log", required=True)
    parser.add_argument("--stall-at", type=int, default=0)
    args = parser.parse_args()
    buffer = SpillBuffer(args.buffer_dir, max_bytes=1 << 40).open()
    files = StorageFiles(args.root)
    stager = Stager(args.root)
    ack = os.open(args.ack_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        artifact_id = new_artifact_id()
        staged = stager.stage(os.urandom(SIZE), artifact_id, filename="out.bin")
        manifest = {
            "id": artifact_id,
            "trace_id": "trace-copy-crash",
            "created_by": "agent-crash",
            "artifact_type": "report",
            "uri": staged.uri,
            "size_bytes": staged.size_bytes,
            "checksum": staged.checksum,
        }
        envelope = make_command(
            "register_artifact", {"manifest": manifest}, source="agent-crash", idempotency_key=artifact_id
        )
        copy = files.file_copy(envelope)
        assert copy is not None
        if n == args.stall_at:
            copy = stalling(copy)
        entry = buffer.spill(envelope, "UNAVAILABLE: down", copy)
        assert entry.blob is not None
        os.write(ack, (artifact_id + "\n").encode())
        os.fsync(ack)


def stalling(copy: FileCopy) -> FileCopy:
    @contextlib.contextmanager
    def open_stalling() -> Iterator[BinaryIO]:
        with copy.open() as inner:
            yield cast(BinaryIO, StallingReader(inner))

    return FileCopy(open_stalling, copy.uri)


if __name__ == "__main__":
    sys.exit(main())
