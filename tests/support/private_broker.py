"""A private RabbitMQ node on spare loopback ports, for tests that kill the broker.

The machine's own node (``rabbit@localhost``) is never touched: the private node has its own name, ports,
Erlang cookie (its own ``HOME``), data directory, config and plugin files, and its own ``rabbitmq-env.conf``
(an empty one, so the system's ``NODENAME`` does not leak in). ``kill()`` is a SIGKILL of the node's BEAM
process, the way a crash or an OOM kill would end it; ``start()`` again reuses the same data directory, so
durable queues and persistent messages come back the way they would in production.

``PrivateCluster`` is three such nodes sharing one Erlang cookie, joined into one RabbitMQ cluster, for the
tests of quorum queues: ``kill(node)`` ends one member the same way, and ``leader(queue)`` names the member
that leads a quorum queue right now.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

CLI_PORTS = range(35672, 35683)
"""Erlang distribution ports the RabbitMQ CLI tools take for themselves: never hand these to the node."""
START_TIMEOUT_S = 90.0
STATS_INTERVAL_MS = 250
"""How often the node refreshes the counters the management API reports (default 5 s)."""


class BrokerError(RuntimeError):
    """The private node could not be started, or did not answer."""


def rabbitmq_bin_dir() -> Path | None:
    """Where ``rabbitmq-server`` and ``rabbitmqctl`` live, skipping distribution wrappers that ``su`` away."""
    candidates = [os.environ.get("RABBITMQ_SBIN", ""), "/usr/lib/rabbitmq/bin"]
    found = shutil.which("rabbitmq-server")
    if found:
        candidates.append(str(Path(found).resolve().parent))
    for folder in filter(None, candidates):
        path = Path(folder)
        if (path / "rabbitmq-server").is_file() and (path / "rabbitmqctl").is_file():
            return path
    return None


def spare_ports(count: int) -> list[int]:
    """Ports free on loopback right now (outside the CLI tools' range), all different."""
    ports: list[int] = []
    holders: list[socket.socket] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            holders.append(sock)
            port = sock.getsockname()[1]
            if port not in CLI_PORTS and port not in ports:
                ports.append(port)
    finally:
        for sock in holders:
            sock.close()
    return ports


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class PrivateServer:
    """``async with`` for a private server: ``open()`` on the way in (``close()`` if that fails part-way, so
    nothing is left running), ``close()`` on the way out."""

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@dataclass
class PrivateBroker(PrivateServer):
    """One private node. Use ``async with PrivateBroker(tmp_path) as broker:``; it is always cleaned up."""

    base: Path
    management: bool = True
    node: str = field(default_factory=lambda: f"rabbit-test-{uuid.uuid4().hex[:8]}@localhost")
    amqp_port: int = 0
    dist_port: int = 0
    http_port: int = 0
    starts: int = 0
    cookie: str | None = None
    """The Erlang cookie (written to the node's own ``HOME``); the members of one cluster share theirs."""
    _proc: asyncio.subprocess.Process | None = None
    _beam_pid: int | None = None

    def __post_init__(self) -> None:
        self.base = self.base / self.node.split("@")[0]
        if not (self.amqp_port and self.dist_port and self.http_port):
            self.amqp_port, self.dist_port, self.http_port = spare_ports(3)
        bin_dir = rabbitmq_bin_dir()
        if bin_dir is None:
            raise BrokerError("rabbitmq-server is not installed: fault tests need it to run a private node")
        self.bin_dir = bin_dir

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def open(self) -> None:
        await self.start()

    # -- life cycle ------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.base / "home"),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(self.base / "beam.pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _write_config(self) -> None:
        for folder in ("home", "mnesia", "log"):
            (self.base / folder).mkdir(parents=True, exist_ok=True)
        lines = [
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}",
            "loopback_users = none",
            f"collect_statistics_interval = {STATS_INTERVAL_MS}",
        ]
        if self.management:
            lines += [f"management.tcp.port = {self.http_port}", "management.tcp.ip = 127.0.0.1"]
        (self.base / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n" if self.management else "[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        if self.cookie is not None:  # read by the node and by the CLI tools run with this node's HOME
            cookie = self.base / "home" / ".erlang.cookie"
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> float:
        """Start (or restart, on the same data) and wait until it accepts AMQP; returns the seconds it took."""
        if self.running:
            raise BrokerError(f"{self.node} is already running")
        if not (self.base / "rabbitmq.conf").exists():
            self._write_config()
        (self.base / "beam.pid").unlink(missing_ok=True)
        began = time.monotonic()
        log = (self.base / "log" / f"server-{self.starts}.out").open("wb")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                str(self.bin_dir / "rabbitmq-server"),
                env=self._env(),
                cwd=self.base,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self.starts += 1
        deadline = began + timeout_s
        while not _port_open(self.amqp_port):
            if self._proc.returncode is not None:
                raise BrokerError(f"{self.node} exited during boot: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise BrokerError(f"{self.node} did not open port {self.amqp_port} in {timeout_s:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 0.2)
        await self.ctl("await_startup", "--timeout", str(int(max(5, deadline - time.monotonic()))))
        self._beam_pid = int((self.base / "beam.pid").read_text().strip())
        if self.management:
            await self._await_http(deadline)
        return time.monotonic() - began

    async def kill(self) -> None:
        """SIGKILL the node's BEAM process: no goodbye to clients, nothing flushed beyond what it fsynced."""
        if self._beam_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._beam_pid, signal.SIGKILL)
            self._beam_pid = None
        await self._reap()

    async def close(self) -> None:
        """Kill whatever is left of the node (its whole process group) and delete its files."""
        await self.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    async def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        for _ in range(100):  # the port closes with the process; wait so a restart can bind it again
            if not _port_open(self.amqp_port):
                break
            await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        out = self.base / "log" / f"server-{max(0, self.starts - 1)}.out"
        text = out.read_text(errors="replace") if out.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- inspection ------------------------------------------------------------------------------

    async def ctl(self, *args: str) -> str:
        """Run ``rabbitmqctl -n <this node> ...`` and return its output (raises on failure)."""
        proc = await asyncio.create_subprocess_exec(
            str(self.bin_dir / "rabbitmqctl"),
            "-q",
            "-n",
            self.node,
            *args,
            env=self._env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} failed ({proc.returncode}): {out.decode()[-2000:]}")
        return out.decode()

    async def api(self, path: str) -> Any:
        """GET from the management API (``/api/...``), decoded JSON."""
        if not self.management:
            raise BrokerError("this private node runs without the management plugin")
        return await asyncio.to_thread(self._get, path)

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}")
        request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    async def _await_http(self, deadline: float) -> None:
        while True:
            try:
                await self.api("/api/overview")
                return
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise BrokerError(f"{self.node}: management API did not answer") from None
                await asyncio.sleep(0.2)

    async def queue(self, name: str) -> dict[str, Any]:
        """The management API's view of a queue (``messages_ready``, ``messages_unacknowledged``, ``consumers``)."""
        return await self.api(f"/api/queues/%2F/{urllib.parse.quote(name, safe='')}")  # type: ignore[no-any-return]

    async def queue_counts(self, queue: str) -> dict[str, int]:
        """``messages_ready``, ``messages_unacknowledged`` and ``consumers`` of a queue, straight from the node
        (``rabbitmqctl list_queues``: no statistics delay, unlike the management API)."""
        columns = ("messages_ready", "messages_unacknowledged", "consumers")
        out = await self.ctl("list_queues", "name", *columns, "--no-table-headers")
        for line in out.splitlines():
            name, *values = line.split("\t")
            if name == queue:
                return dict(zip(columns, map(int, values), strict=True))
        raise BrokerError(f"no queue {queue!r} on {self.node}")

    async def consumers(self, queue: str) -> int:
        """How many consumers the queue has right now, from the node itself (``rabbitmqctl list_consumers``)."""
        out = await self.ctl("list_consumers", "queue_name", "--no-table-headers")
        return sum(1 for line in out.splitlines() if line.split("\t")[0] == queue)

    async def wait_for_consumer(self, queue: str, timeout_s: float) -> float:
        """Seconds until ``queue`` has a consumer again; raises when it has none after ``timeout_s``."""
        began = time.monotonic()
        while True:
            with contextlib.suppress(BrokerError):
                if await self.consumers(queue) > 0:
                    return time.monotonic() - began
            if time.monotonic() - began > timeout_s:
                raise BrokerError(f"no consumer on {queue} {timeout_s:.0f}s after the restart")
            await asyncio.sleep(0.25)


CLUSTER_SIZE = 3


@dataclass
class PrivateCluster(PrivateServer):
    """Three private nodes joined into one cluster. ``async with PrivateCluster(tmp_path) as cluster:``.

    The three start at once as single nodes; then nodes 2 and 3 join node 1 (``stop_app``, ``join_cluster``,
    ``start_app``), as an operator would grow a cluster. They share one Erlang cookie, which no other node
    on the machine has, and every port is their own. A killed member started again (``heal()``) rejoins
    with its data.
    """

    base: Path
    size: int = CLUSTER_SIZE
    management: bool = True
    nodes: list[PrivateBroker] = field(init=False)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.base = self.base / f"cluster-{tag}"
        cookie = uuid.uuid4().hex.upper()
        ports = iter(spare_ports(3 * self.size))  # all at once, so no two members are handed the same port
        self.nodes = [
            PrivateBroker(
                self.base,
                management=self.management,
                node=f"rabbit-c{tag}-{i}@localhost",
                amqp_port=next(ports),
                dist_port=next(ports),
                http_port=next(ports),
                cookie=cookie,
            )
            for i in range(1, self.size + 1)
        ]

    @property
    def running(self) -> list[PrivateBroker]:
        return [node for node in self.nodes if node.running]

    async def open(self) -> None:
        first, *others = self.nodes
        began = time.monotonic()
        await asyncio.gather(*(node.start() for node in self.nodes))
        for node in others:  # one at a time: two joins at once may race on the cluster's membership
            await node.ctl("stop_app")
            await node.ctl("join_cluster", first.node)
            await node.ctl("start_app")
        await self.wait_running(self.size, START_TIMEOUT_S - (time.monotonic() - began))

    async def close(self) -> None:
        await asyncio.gather(*(node.close() for node in self.nodes))
        shutil.rmtree(self.base, ignore_errors=True)

    async def running_nodes(self) -> list[str]:
        """The members the cluster itself counts as running (``rabbitmqctl cluster_status``)."""
        out = await self._any().ctl("cluster_status", "--formatter", "json")
        return list(json.loads(out).get("running_nodes", []))

    async def wait_running(self, count: int, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while len(found := await self.running_nodes()) != count:
            if time.monotonic() > deadline:
                raise BrokerError(f"the cluster has {len(found)} running nodes, not {count}: {found}")
            await asyncio.sleep(0.5)

    async def heal(self) -> None:
        """Start the members that are down again and wait until the cluster counts all of them running."""
        down = [node for node in self.nodes if not node.running]
        await asyncio.gather(*(node.start() for node in down))
        if down:
            await self.wait_running(self.size)

    async def kill(self, node: PrivateBroker) -> None:
        """SIGKILL one member's BEAM, as a crash would end it; the others notice at once (its sockets close)."""
        await node.kill()

    async def leader(self, queue: str) -> PrivateBroker | None:
        """The running member leading the quorum queue ``queue`` now; None while it has none (an election in
        progress) or a dead member is still named. From the management API, which reads the queue's record
        (unlike its message counts, the leader is not held back by the statistics interval)."""
        for node in self.running:
            try:
                found = await node.queue(queue)
            except (OSError, urllib.error.URLError):
                continue  # this member is going down too, or busy: ask the next
            leader = self._members.get(str(found.get("leader")))
            return leader if leader is not None and leader.running else None
        return None

    @property
    def _members(self) -> dict[str, PrivateBroker]:
        return {node.node: node for node in self.nodes}

    async def consumers(self, queue: str) -> int:
        """Consumers of ``queue`` as a running member counts them."""
        return await self._any().consumers(queue)

    def _any(self) -> PrivateBroker:
        if not (alive := self.running):
            raise BrokerError("no member of the cluster is running")
        return alive[0]
