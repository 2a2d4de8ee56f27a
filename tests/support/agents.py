"""Throwaway agent processes (``tests.support.agent_proc``, ``tests.support.copy_proc``): start one, kill it."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PIPE = asyncio.subprocess.PIPE


@asynccontextmanager
async def agent_process(module: str, *args: str, stdin: bool = False) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m <module> <args>`` from the repository, handed over once it printed ``ready``; killed on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, cwd=REPO, stdin=PIPE if stdin else None, stdout=PIPE, stderr=PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise AssertionError(f"agent did not start: {line!r} {await proc.stderr.read()!r}")
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def killed_after(proc: asyncio.subprocess.Process, delay_s: float) -> bool:
    """SIGKILL the process ``delay_s`` from now unless it ends first; whether it was killed."""
    try:
        await asyncio.wait_for(proc.wait(), delay_s)
    except TimeoutError:
        proc.send_signal(signal.SIGKILL)
        return True
    return False
