"""A private PostgreSQL cluster on a spare loopback port, for tests that stop the database mid-stream.

The machine's PostgreSQL is shared and must never be stopped; this one is made by ``initdb`` in a temp
directory, run by ``pg_ctl`` and thrown away afterwards. PostgreSQL refuses to run as root, so under root
the cluster belongs to the ``postgres`` account and every tool runs through ``runuser``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path

from tests.support.private_broker import PrivateServer, spare_ports

PG_ACCOUNT = "postgres"


class PostgresError(RuntimeError):
    """The private cluster could not be created, started or stopped."""


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<n>/bin`` with ``initdb`` and ``pg_ctl`` (or ``pg_config --bindir``)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
    if found := shutil.which("initdb"):
        candidates.append(Path(found).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


class PrivatePostgres(PrivateServer):
    """``async with PrivatePostgres() as pg:``; ``stop()`` is an immediate shutdown (a crash, to clients)."""

    def __init__(self) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise PostgresError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bin_dir = bin_dir
        self.port = spare_ports(1)[0]
        self.base = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam(PG_ACCOUNT)
            os.chown(self.base, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", PG_ACCOUNT, "--"]

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    async def open(self) -> None:
        await self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        await self.start()

    async def start(self) -> float:
        began = time.monotonic()
        options = f"-p {self.port} -h 127.0.0.1 -k {self.base} -c fsync=off -c max_connections=50"
        await self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        return time.monotonic() - began

    async def stop(self, mode: str = "immediate") -> None:
        await self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    async def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(PostgresError):
                await self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    async def _run(self, tool: str, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self._as_user,
            str(self.bin_dir / tool),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.base,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresError(f"{tool} failed ({proc.returncode}): {out.decode(errors='replace')[-2000:]}\n{log}")
        return out.decode(errors="replace")
