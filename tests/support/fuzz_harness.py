"""The worker's pipeline without a broker, on a temp SQLite database, driven from synchronous code.

Hypothesis calls its test function once per example; each example here feeds ``Pipeline.process`` on an
event loop this harness owns (the services live on it for the whole run), so thousands of examples share
one database and one storage root, as a long-running worker would. The harness also lays out the traps
the hostile URIs aim at: a file outside the root, symlinks out of (and inside) ``temp/``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contracts import CommandEnvelope, ErrorEnvelope, ResultEnvelope, make_command
from service.core.context import Services
from service.core.pipeline import Delivery, Outcome, Pipeline
from service.files import FileStore
from service.handlers import ACTIONS
from service.settings import Settings
from service.store.engine.db import create_engine
from service.store.engine.schema import migrate
from service.store.engine.writer import SingleWriter
from tests.support.databases import create_pg_database, drop_pg_database, sqlite_url
from tests.support.hostile import FUZZ_ARTIFACTS, OUTSIDE_FILE, Paths

ADMIN = "admin-agent"
STEP_TIMEOUT_S = 60.0
OUTSIDE_BYTES = b"outside the storage root: must never be read into, moved or deleted"


def strict_json(raw: bytes) -> Any:
    """Parse as JSON that any language accepts: NaN or Infinity in a reply is a failure."""

    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON constant {token} in a reply")

    return json.loads(raw, parse_constant=refuse)


def parse_reply(raw: bytes) -> ResultEnvelope | ErrorEnvelope:
    """The reply as the contract's RESULT or ERROR envelope (raises if it is neither)."""
    kind = strict_json(raw).get("type")
    if kind == "ai.team.result":
        return ResultEnvelope.model_validate_json(raw)
    return ErrorEnvelope.model_validate_json(raw)


FORBIDDEN_CODES = {"INTERNAL", "UNAVAILABLE"}
"""Never an answer to bad input: INTERNAL is an exception the pipeline caught, UNAVAILABLE would be retried forever."""


def is_command(body: bytes, limit: int) -> bool:
    """What the contract calls a readable COMMAND envelope (anything else is refused to the DLQ)."""
    if len(body) > limit:
        return False
    try:
        envelope = CommandEnvelope.model_validate_json(body)
    except ValueError:
        return False
    if not is_strict_json(body):
        return False
    return envelope.time is None or envelope.time - datetime.now(UTC) <= timedelta(minutes=5)


class _NotJson(Exception):
    pass


def _refuse(token: str) -> float:
    raise _NotJson(token)


def _finite(token: str) -> float:
    if math.isinf(value := float(token)):
        raise _NotJson(token)
    return value


def is_strict_json(body: bytes) -> bool:
    """RFC 8259 JSON whose numbers a double holds: no NaN, Infinity or 1e400."""
    try:
        json.loads(body, parse_constant=_refuse, parse_float=_finite)
    except _NotJson:
        return False
    except (ValueError, RecursionError):
        return True  # not JSON at all: pydantic refused it already
    return True


class FuzzHarness:
    """``backend`` "sqlite" (a file in ``folder``) or "postgres" (a fresh database on the machine's server)."""

    def __init__(self, folder: Path, backend: str = "sqlite") -> None:
        self.folder = folder
        self.backend = backend
        self._pg_name: str | None = None
        self.root = (folder / "files").resolve()
        self.outside = folder / OUTSIDE_FILE
        self.paths = Paths(str(self.root), str(self.outside.resolve()))
        self.settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=sqlite_url(folder),
            storage_root=self.root.as_uri(),
            admins=frozenset({ADMIN}),
            max_file_bytes=64 * 1024,
            cleanup_interval_s=0,
        )
        self.loop = asyncio.new_event_loop()
        self.services: Services | None = None
        self.pipeline: Pipeline | None = None
        self.seeded: dict[str, Any] = {}
        self.processed = 0
        self.seed_name = f"protected-{uuid.uuid4().hex}"
        """Names no strategy can produce: hostile commands may hit the ``fuzz`` items, never these."""

    def __enter__(self) -> FuzzHarness:
        self.root.mkdir(parents=True)
        self.outside.write_bytes(OUTSIDE_BYTES)
        if self.backend == "postgres":
            url, self._pg_name = self.run(create_pg_database())
            self.settings = self.settings.model_copy(update={"database_url": url})
        self.run(self._open())
        self._lay_traps()
        self.seed()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.services is not None:
                self.run(self.services.writer.stop())
                self.run(self.services.engine.dispose())
            if self._pg_name is not None:
                self.run(drop_pg_database(self._pg_name))
        finally:
            self.loop.close()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, STEP_TIMEOUT_S))

    async def _open(self) -> None:
        engine = create_engine(self.settings.database_url)
        await migrate(engine)
        files = FileStore(self.settings.storage_root)
        files.ensure_layout()
        writer = SingleWriter(engine)
        await writer.start()
        self.services = Services(settings=self.settings, engine=engine, writer=writer, files=files)
        self.pipeline = Pipeline(self.services, ACTIONS)

    def _lay_traps(self) -> None:
        temp = self.root / "temp"
        (temp / "escape-link.bin").symlink_to(self.outside)
        (temp / "escape-dir").symlink_to(self.folder, target_is_directory=True)
        inside = self.root / "artifacts" / "inside-target.bin"
        inside.write_bytes(b"inside")
        (temp / "inside-link.bin").symlink_to(inside)

    # -- commands ---------------------------------------------------------------------------------

    def process(self, delivery: Delivery) -> Outcome:
        assert self.pipeline is not None
        self.processed += 1
        return self.run(self.pipeline.process(delivery))

    def call(self, action: str, params: dict[str, Any], *, requester: str = ADMIN) -> ResultEnvelope | ErrorEnvelope:
        """One well-formed command, as an agent would send it, with ``requester`` as its broker-validated
        ``user_id`` (the only identity admin rights come from); returns the parsed reply."""
        envelope = make_command(action, params, source="agent-fuzz")
        outcome = self.process(Delivery(envelope.to_json_bytes(), reply_to="replies", user_id=requester))
        assert outcome.body is not None
        return parse_reply(outcome.body)

    def output(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        reply = self.call(action, params)
        assert isinstance(reply, ResultEnvelope), f"{action} failed: {reply.data}"
        return reply.data.output

    def stage(self, data: bytes) -> dict[str, Any]:
        """A file under ``temp/`` and the manifest fields that describe it."""
        path = self.root / "temp" / f"{uuid.uuid4().hex}.bin"
        path.write_bytes(data)
        return {
            "id": f"art_{uuid.uuid4()}",
            "uri": path.as_uri(),
            "size_bytes": len(data),
            "checksum": "sha256:" + hashlib.sha256(data).hexdigest(),
            "created_by": "agent-fuzz",
            "artifact_type": "report",
        }

    # -- the data hostile input must not touch -----------------------------------------------------

    def seed(self) -> None:
        manifest = {**self.stage(b"seeded bytes"), "trace_id": "trace-seed", "labels": {"k": "v"}}
        registered = self.output("register_artifact", {"manifest": manifest})
        self.seeded["artifact"] = self.output("get_artifact", {"artifact_id": manifest["id"]})
        self.seeded["artifact_uri"] = registered["uri"]
        messages = [{"role": "system", "content": "seed"}, {"role": "user", "content": "hello"}]
        name = self.seed_name
        self.output("save_thread", {"thread_id": name, "messages": messages, "metadata": {"k": "v"}})
        self.seeded["thread"] = self.output("get_thread", {"thread_id": name})
        self.output("put_memory", {"namespace": [name], "key": "k", "value": {"v": 1}})
        self.seeded["memory"] = self.output("get_memory", {"namespace": [name], "key": "k"})
        # Items hostile commands are meant to find and change.
        for artifact_id in FUZZ_ARTIFACTS:
            fields = {**self.stage(artifact_id.encode()), "id": artifact_id, "trace_id": "trace-fuzz"}
            self.output("register_artifact", {"manifest": {**fields, "visibility": "public"}})
        self.output("save_thread", {"thread_id": "fuzz-thread", "messages": messages})
        self.output("put_memory", {"namespace": ["fuzz"], "key": "k", "value": {"v": 1}})

    def damage(self) -> list[str]:
        """What hostile input changed that it must not have: seeded items, their files, the outside file."""
        found = []
        if (
            self.output("get_artifact", {"artifact_id": self.seeded["artifact"]["artifact_id"]})
            != self.seeded["artifact"]
        ):
            found.append("seeded artifact changed")
        if Path(self.seeded["artifact_uri"].removeprefix("file://")).read_bytes() != b"seeded bytes":
            found.append("seeded artifact's file changed")
        if self.output("get_thread", {"thread_id": self.seed_name}) != self.seeded["thread"]:
            found.append("seeded thread changed")
        if self.output("get_memory", {"namespace": [self.seed_name], "key": "k"}) != self.seeded["memory"]:
            found.append("seeded memory item changed")
        if not self.outside.exists() or self.outside.read_bytes() != OUTSIDE_BYTES:
            found.append("the file outside the storage root was touched")
        if os.path.realpath(self.root / "temp" / "escape-link.bin") != str(self.outside.resolve()):
            found.append("the escaping symlink was followed and moved")
        return found
