"""A start that cannot go on blames the system at fault: one line on stderr, an exit code of its own, no traceback.

Each case runs ``python -m service.cli`` as an operator would, with one setting broken and the others pointing
at systems that work, so the line has to come from the broken one. The broker of the unbroken settings is a
closed port unless the case needs a real one: a check that wrongly let a start through then fails on the
broker (exit 3) instead of starting a worker.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from faststream.rabbit import RabbitBroker

from service.settings import Settings
from service.startup import Exit
from service.store.engine import schema
from service.store.engine.db import create_engine
from service.transport import topology as declared
from tests.support.databases import PG_ADMIN_DSN
from tests.support.legacy_dir import build
from tests.support.requirements import missing
from tests.support.workers import delete_topology

START_TIMEOUT_S = 90
PG_SERVER = urlsplit(PG_ADMIN_DSN).netloc
"""user@host:port of the machine's PostgreSQL (the tests' admin DSN)."""


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """An environment with every setting valid (SQLite and files under ``tmp_path``), then ``settings`` over it."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STORAGE_", "AWS_")) and k not in ("AMQP_URL", "DATABASE_URL")
    }
    suffix = uuid.uuid4().hex[:10]
    return {
        **inherited,
        "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{closed_port()}/",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'storage.db'}",
        "STORAGE_ROOT": (tmp_path / "files").as_uri(),
        "STORAGE_EXCHANGE": f"startup.{suffix}",
        "STORAGE_QUEUE": f"startup.{suffix}.commands",
        "STORAGE_DLQ": f"startup.{suffix}.dlq",
        "STORAGE_NODE_REGISTRY": "false",
        **settings,
    }


def storage_worker(*args: str, env: dict[str, str], cwd: Path) -> Outcome:
    """``python -m service.cli ARGS``; a start that got through (it would run until stopped) fails the test."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"storage-worker {' '.join(args)} did not stop: it started despite the broken setting\n{exc}")
    return Outcome(done.returncode, done.stdout, done.stderr)


def assert_one_line(outcome: Outcome, code: int, stage: str, *mentions: str) -> str:
    """Exit ``code``, and stderr is exactly one line naming ``stage`` and every one of ``mentions``."""
    assert outcome.code == code, outcome.stderr
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert len(outcome.lines) == 1, outcome.stderr
    line = outcome.lines[0]
    assert line.startswith(f"storage-worker: {stage}: "), line
    for mention in mentions:
        assert mention in line, (mention, line)
    return line


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port something else already listens on."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield int(holder.getsockname()[1])


# ---- settings ----


def test_an_invalid_setting_names_the_variable(tmp_path: Path) -> None:
    """A value the settings refuse is one line naming the variable, exit 5."""
    outcome = storage_worker("run", env=environment(tmp_path, STORAGE_PREFETCH="0"), cwd=tmp_path)
    assert_one_line(outcome, Exit.SETTINGS_INVALID, "settings", "STORAGE_PREFETCH")


# ---- database ----


@pytest.mark.postgres
def test_a_missing_postgres_database_is_one_line(tmp_path: Path) -> None:
    """A database that does not exist on a running PostgreSQL: exit 8, its name and how to create it."""
    url = f"postgresql+asyncpg://{PG_SERVER}/does_not_exist"
    outcome = storage_worker("run", env=environment(tmp_path, DATABASE_URL=url), cwd=tmp_path)
    if outcome.code == Exit.DATABASE_UNREACHABLE:
        missing(f"no PostgreSQL at {PG_SERVER}: {outcome.stderr}")
    assert_one_line(outcome, Exit.DATABASE_MISSING, "database", '"does_not_exist" does not exist', "createdb")


@pytest.mark.parametrize(
    ("url", "wanted"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
        ("sqlite:///storage.db", "sqlite+aiosqlite://"),
    ],
    ids=["postgresql-without-asyncpg", "sqlite-without-aiosqlite"],
)
def test_a_url_without_the_async_driver_says_which_to_use(tmp_path: Path, url: str, wanted: str) -> None:
    """``postgresql://`` (a 41-line traceback before) is one line telling the URL to use, exit 6."""
    outcome = storage_worker("run", env=environment(tmp_path, DATABASE_URL=url), cwd=tmp_path)
    assert_one_line(outcome, Exit.DATABASE_URL, "database", wanted)


def test_postgres_not_running_is_not_blamed_on_the_broker(tmp_path: Path) -> None:
    """Nothing on the database port: the database is named, exit 7, not "cannot reach RabbitMQ" (exit 3)."""
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/storage"
    outcome = storage_worker("run", env=environment(tmp_path, DATABASE_URL=url), cwd=tmp_path)
    line = assert_one_line(outcome, Exit.DATABASE_UNREACHABLE, "database", "PostgreSQL", "DATABASE_URL")
    assert "RabbitMQ" not in line


def test_a_sqlite_file_where_no_folder_can_be_made(tmp_path: Path) -> None:
    """The SQLite file's folder would have to be made inside a file: exit 10, naming that folder."""
    (tmp_path / "blocker").write_text("a file, not a folder")
    url = f"sqlite+aiosqlite:///{tmp_path / 'blocker' / 'db' / 'storage.db'}"
    outcome = storage_worker("run", env=environment(tmp_path, DATABASE_URL=url), cwd=tmp_path)
    assert_one_line(outcome, Exit.DATABASE_FOLDER, "database", "SQLite", str(tmp_path / "blocker"))


@pytest.mark.parametrize(
    "args", [["migrate"], ["cleanup", "--dry-run"], ["import", "legacy", "--dry-run"]], ids=lambda a: a[0]
)
def test_the_maintenance_commands_name_the_database_too(tmp_path: Path, args: list[str]) -> None:
    """``migrate``, ``cleanup`` and ``import`` open the database the same way and fail the same way."""
    env = environment(tmp_path, DATABASE_URL="postgresql://postgres@127.0.0.1:5432/test")
    outcome = storage_worker(*args, env=env, cwd=tmp_path)
    assert_one_line(outcome, Exit.DATABASE_URL, "database", "postgresql+asyncpg://")


def sqlite_behind_head(db_file: Path) -> str:
    """A SQLite database at the first revision, older than this worker's head; its URL."""
    url = f"sqlite+aiosqlite:///{db_file}"

    async def first_revision() -> None:
        engine = create_engine(url)
        try:
            await schema.migrate(engine, schema.INITIAL_REVISION)
        finally:
            await engine.dispose()

    assert schema.heads() != (schema.INITIAL_REVISION,), "the test needs a revision older than head"
    asyncio.run(first_revision())
    return url


@pytest.mark.parametrize("command", ["run", "cleanup", "import"])
def test_a_schema_behind_the_worker_is_exit_4_for_every_command(tmp_path: Path, amqp_url: str, command: str) -> None:
    """A database at an older revision (migrate-on-start off): ``run``, ``cleanup`` and ``import`` refuse alike,
    exit 4, and say to run ``storage-worker migrate``."""
    url = sqlite_behind_head(tmp_path / "old.db")
    args = {"run": ["run"], "cleanup": ["cleanup"], "import": ["import", str(build(tmp_path / "legacy").root)]}
    env = environment(tmp_path, AMQP_URL=amqp_url, DATABASE_URL=url)
    outcome = storage_worker(*args[command], env=env, cwd=tmp_path)
    assert outcome.code == Exit.SCHEMA_NOT_READY, outcome.stderr
    assert "Traceback" not in outcome.stderr, outcome.stderr
    # the worker's own log lines (alembic reading the revision, at INFO) may come first; the reason is the last
    assert outcome.lines[-1].startswith("storage-worker: database: "), outcome.stderr
    assert "storage-worker migrate" in outcome.lines[-1], outcome.stderr


# ---- storage root ----


def test_a_storage_root_inside_a_file_is_one_line(tmp_path: Path) -> None:
    """STORAGE_ROOT under a regular file cannot be created: exit 11, naming STORAGE_ROOT and the file."""
    (tmp_path / "blocker").write_text("a file, not a folder")
    root = (tmp_path / "blocker" / "files").as_uri()
    outcome = storage_worker("run", env=environment(tmp_path, STORAGE_ROOT=root), cwd=tmp_path)
    assert_one_line(outcome, Exit.STORAGE_LOCAL, "storage", "STORAGE_ROOT", str(tmp_path / "blocker"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder all the same")
def test_a_read_only_storage_root_is_one_line(tmp_path: Path) -> None:
    """A STORAGE_ROOT this user may not write: exit 11."""
    root = tmp_path / "files"
    root.mkdir()
    root.chmod(0o555)
    try:
        outcome = storage_worker("run", env=environment(tmp_path, STORAGE_ROOT=root.as_uri()), cwd=tmp_path)
    finally:
        root.chmod(0o755)
    assert_one_line(outcome, Exit.STORAGE_LOCAL, "storage", "STORAGE_ROOT", str(root))


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 on loopback, with one bucket, ``present``."""
    import boto3
    import moto.server as server_module

    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
        )
        client.create_bucket(Bucket="present")
        yield endpoint
    finally:
        server.stop()


def s3_environment(tmp_path: Path, endpoint: str, root: str, *, credentials: bool = True) -> dict[str, str]:
    env = environment(tmp_path, STORAGE_ROOT=root, AWS_ENDPOINT_URL=endpoint, AWS_DEFAULT_REGION="us-east-1")
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    if credentials:
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return env


def test_a_missing_bucket_is_one_line(tmp_path: Path, s3_endpoint: str) -> None:
    """The bucket of an s3:// STORAGE_ROOT does not exist: exit 15; the worker does not make one behind ops' back."""
    env = s3_environment(tmp_path, s3_endpoint, "s3://absent/prod")
    outcome = storage_worker("run", env=env, cwd=tmp_path)
    assert_one_line(outcome, Exit.STORAGE_BUCKET, "storage", "s3://absent/prod")


def test_missing_object_store_credentials_are_one_line(tmp_path: Path, s3_endpoint: str) -> None:
    """No AWS credentials anywhere: exit 14, saying which variables to set."""
    env = s3_environment(tmp_path, s3_endpoint, "s3://present/prod", credentials=False)
    outcome = storage_worker("run", env=env, cwd=tmp_path)
    assert_one_line(outcome, Exit.STORAGE_CREDENTIALS, "storage", "AWS_ACCESS_KEY_ID")


# ---- broker ----


def test_rabbitmq_on_a_closed_port_is_one_line(tmp_path: Path) -> None:
    """Nothing listens where AMQP_URL points: exit 3, naming RabbitMQ and the address without the password."""
    port = closed_port()
    env = environment(tmp_path, AMQP_URL=f"amqp://guest:hunter2@127.0.0.1:{port}/")
    outcome = storage_worker("run", env=env, cwd=tmp_path)
    line = assert_one_line(outcome, Exit.BROKER_UNREACHABLE, "broker", "RabbitMQ", f"127.0.0.1:{port}")
    assert "hunter2" not in line


def test_a_wrong_broker_password_is_not_unreachable(tmp_path: Path, amqp_url: str) -> None:
    """A running broker that refuses the login: exit 16 (not 3), and nothing was started before the refusal."""
    parts = urlsplit(amqp_url)
    wrong = parts._replace(netloc=f"{parts.username or 'guest'}:not-the-password@{parts.hostname}:{parts.port or 5672}")
    outcome = storage_worker("run", env=environment(tmp_path, AMQP_URL=urlunsplit(wrong)), cwd=tmp_path)
    line = assert_one_line(outcome, Exit.BROKER_AUTH, "broker", "refused the login", "AMQP_URL")
    assert "not-the-password" not in line
    assert not (tmp_path / "files").exists(), "the worker laid out its files before the broker let it in"


def test_a_missing_virtual_host_is_one_line(tmp_path: Path, amqp_url: str) -> None:
    """The login works but the virtual host in AMQP_URL does not exist: exit 17, naming it."""
    vhost = f"no-such-vhost-{uuid.uuid4().hex[:8]}"
    missing = urlunsplit(urlsplit(amqp_url)._replace(path=f"/{vhost}"))
    outcome = storage_worker("run", env=environment(tmp_path, AMQP_URL=missing), cwd=tmp_path)
    assert_one_line(outcome, Exit.BROKER_VHOST, "broker", f'virtual host "{vhost}"')


@pytest.mark.parametrize(("existing", "wanted"), [("classic", "quorum"), ("quorum", "classic")])
async def test_queues_of_the_other_type_are_one_line(tmp_path: Path, amqp_url: str, existing: str, wanted: str) -> None:
    """The queues were declared by workers of the other ``STORAGE_QUEUE_TYPE``: RabbitMQ refuses to redeclare
    them, and the start stops with exit 19, naming the queue, its type and the setting."""
    env = environment(tmp_path, AMQP_URL=amqp_url, STORAGE_QUEUE_TYPE=existing, STORAGE_MIGRATE_ON_START="true")
    before = Settings(_env_file=None, **{k.lower(): v for k, v in env.items() if k.startswith(("STORAGE_", "AMQP"))})
    broker = RabbitBroker(amqp_url, logger=None)
    await broker.connect()
    try:
        await declared.declare(broker, before)
    finally:
        await broker.stop()
    try:
        env["STORAGE_QUEUE_TYPE"] = wanted
        outcome = await asyncio.to_thread(storage_worker, "run", env=env, cwd=tmp_path)
    finally:
        await delete_topology(before)
    assert outcome.code == Exit.BROKER_QUEUE, outcome.stderr
    assert "Traceback" not in outcome.stderr, outcome.stderr
    line = outcome.lines[-1]  # the worker's own log lines (opening its stores, at INFO) may come first
    assert line.startswith("storage-worker: broker: RabbitMQ refused to declare queue "), line
    queue_named = f'"{before.dlq}"' in line or f'"{before.queue}"' in line
    assert queue_named and f"is a {existing} queue" in line, line
    assert f"STORAGE_QUEUE_TYPE={wanted}" in line and f"set STORAGE_QUEUE_TYPE={existing}" in line, line


# ---- ports ----


def test_a_busy_metrics_port_is_one_line(tmp_path: Path, amqp_url: str, held_port: int) -> None:
    """Everything else works, but the metrics port is taken: exit 18, naming the port and the setting."""
    env = environment(
        tmp_path, AMQP_URL=amqp_url, STORAGE_METRICS_PORT=str(held_port), STORAGE_METRICS_HOST="127.0.0.1"
    )
    outcome = storage_worker("run", env=env, cwd=tmp_path)
    assert_one_line(outcome, Exit.PORT_UNAVAILABLE, "ports", f"port {held_port}", "STORAGE_METRICS_PORT")


# ---- --debug ----


@pytest.mark.parametrize("args", [["--debug", "run"], ["run", "--debug"]], ids=["before", "after"])
def test_debug_prints_the_traceback_above_the_same_line(tmp_path: Path, args: list[str]) -> None:
    """With ``--debug`` the cause's traceback comes first, then the very line and exit code a plain start gives."""
    env = environment(tmp_path)
    plain = storage_worker("run", env=env, cwd=tmp_path)
    debug = storage_worker(*args, env=env, cwd=tmp_path)
    assert plain.code == debug.code == Exit.BROKER_UNREACHABLE, debug.stderr
    assert "Traceback (most recent call last)" in debug.stderr
    assert re.search(r"AMQPConnectionError|ConnectionRefusedError", debug.stderr)
    assert debug.lines[-1] == plain.lines[0]
