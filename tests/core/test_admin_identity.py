"""Class 5 of issue 16: admin rights come only from the broker-validated AMQP ``user_id``, never the body.

The attacker writes an admin's name where any agent can write anything: the envelope ``source`` or
``data.context.requester_id``. The worker lists that name in STORAGE_ADMINS. Before the fix the claim ran
``cleanup`` and ``delete_artifact``. Now it is an ordinary agent; only a command whose ``user_id`` RabbitMQ
validated against the connection's user (and which STORAGE_ADMINS lists) is an admin's. A real, separate
broker user shows the whole path: it is admin when it sends its own name, and a guest connection that sends
that name as ``user_id`` is stopped by the broker before the worker ever sees the command.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.exceptions import ChannelPreconditionFailed

from buffer import PermissionDenied, StorageClient
from contracts import make_command, topology
from tests.support.broker import BROKER_USER
from tests.support.broker_users import broker_account
from tests.support.bus import Bus, error, output
from tests.support.client import FAST_RETRIES
from tests.support.wire import register
from tests.support.workers import Workers

pytestmark = pytest.mark.security

ADMIN_NAME = "ops-admin"
"""An admin's name as ops would list it; the attacker claims it in the body."""

"""The test broker's user: the one ``user_id`` RabbitMQ accepts on the tests' connections."""

ADMINS = frozenset({ADMIN_NAME, BROKER_USER})
"""The worker's STORAGE_ADMINS: the claimed name and the test broker's user (its broker-validated admin)."""

CLAIMS: dict[str, dict[str, Any]] = {
    "source": {"source": ADMIN_NAME},
    "context.requester_id": {"context": {"requester_id": ADMIN_NAME}},
}
TWO_HOURS_S = 2 * 3600


def stale_upload(root: Path) -> Path:
    """A temp file older than the temp_orphans window: what a real cleanup would move away."""
    stale = root / "temp" / f"stale-{uuid.uuid4().hex}.bin"
    stale.write_bytes(b"an abandoned upload")
    old = time.time() - TWO_HOURS_S
    os.utime(stale, (old, old))
    return stale


@pytest.mark.parametrize("claim", sorted(CLAIMS))
async def test_a_body_claimed_admin_name_can_neither_delete_nor_clean_up(
    workers: Workers, storage_root: Path, claim: str
) -> None:
    """An admin's name in ``source`` or ``context.requester_id`` gets PERMISSION_DENIED for delete_artifact and
    cleanup and nothing is deleted; the same commands with the broker-validated admin ``user_id`` succeed."""
    _, bus = await workers.start(admins=ADMINS)
    manifest, _ = await register(bus, storage_root, b"someone's work", visibility="public")
    stale = stale_upload(storage_root)
    forged = CLAIMS[claim]

    delete = error(await bus.call("delete_artifact", {"artifact_id": manifest["id"]}, **forged))
    assert delete["code"] == "PERMISSION_DENIED" and delete["details"]["requester"] == ADMIN_NAME
    clean = error(await bus.call("cleanup", {"scopes": ["temp_orphans"]}, **forged))
    assert clean["code"] == "PERMISSION_DENIED"
    assert output(await bus.call("get_artifact", {"artifact_id": manifest["id"]}))["artifact_id"] == manifest["id"]
    assert stale.exists(), "a refused cleanup moved nothing"

    admin = {"user_id": BROKER_USER}
    assert output(await bus.call("delete_artifact", {"artifact_id": manifest["id"]}, amqp=admin))["deleted"] is True
    counts = output(await bus.call("cleanup", {"scopes": ["temp_orphans"]}, amqp=admin))["counts"]
    assert counts["temp_orphans"] >= 1 and not stale.exists()
    assert error(await bus.call("get_artifact", {"artifact_id": manifest["id"]}))["code"] == "NOT_FOUND"


# -- a real, separate broker user ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker_admin(amqp_url: str) -> Iterator[tuple[str, str]]:
    """A broker user of its own (name, AMQP URL), made with rabbitmqctl on the broker the tests use."""
    with broker_account(amqp_url, "mb-admin") as account:
        yield account


async def test_a_separate_broker_user_is_admin_and_its_name_cannot_be_borrowed(
    workers: Workers, storage_root: Path, broker_admin: tuple[str, str]
) -> None:
    """Connected as its own broker user and sending its name as user_id, an admin deletes; a guest connection
    sending that name as user_id is closed by RabbitMQ (PRECONDITION_FAILED) before the worker sees it, and the
    same name claimed in the body is refused."""
    name, url = broker_admin
    worker, guest = await workers.start(admins=frozenset({name}))
    victim, _ = await register(guest, storage_root, b"victim", visibility="public")
    target, _ = await register(guest, storage_root, b"target", visibility="public")

    # The attacker borrows the admin's name as user_id on its own (guest) connection.
    command = make_command("delete_artifact", {"artifact_id": victim["id"]}, source="mallory")
    connection = await aio_pika.connect(worker.settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(worker.settings.exchange)
        message = aio_pika.Message(command.to_json_bytes(), user_id=name, correlation_id=command.id)
        with pytest.raises(ChannelPreconditionFailed, match="user_id"):
            await exchange.publish(message, routing_key=topology.ROUTING_KEY_ANY)
    finally:
        await connection.close()
    claimed = error(await guest.call("delete_artifact", {"artifact_id": victim["id"]}, context={"requester_id": name}))
    assert claimed["code"] == "PERMISSION_DENIED"
    assert output(await guest.call("get_artifact", {"artifact_id": victim["id"]}))["artifact_id"] == victim["id"]

    admin = await Bus(url, worker.settings.exchange, worker.settings.dlq).open()
    try:
        deleted = await admin.call("delete_artifact", {"artifact_id": target["id"]}, amqp={"user_id": name})
    finally:
        await admin.close()
    assert output(deleted)["deleted"] is True
    assert error(await guest.call("get_artifact", {"artifact_id": target["id"]}))["code"] == "NOT_FOUND"
    assert output(await guest.call("get_artifact", {"artifact_id": victim["id"]}))["artifact_id"] == victim["id"]


async def test_the_client_library_connected_as_a_broker_user_is_admin(
    workers: Workers, storage_root: Path, broker_admin: tuple[str, str], tmp_path: Path
) -> None:
    """StorageClient with ``user_id=True`` on the admin user's URL runs delete_artifact and cleanup; the same
    client without the option is an ordinary agent and is refused."""
    name, url = broker_admin
    worker, guest = await workers.start(admins=frozenset({name}))
    manifest, _ = await register(guest, storage_root, b"to go", visibility="public")
    common: dict[str, Any] = {
        "amqp_url": url,
        "exchange": worker.settings.exchange,
        "storage_root": worker.settings.storage_root,
        "agent_id": name,  # the source claims the admin's name too: it must not matter
        "call_timeout_s": 5.0,
        **FAST_RETRIES,
    }
    async with StorageClient(**common, buffer_dir=tmp_path / "plain") as plain:
        with pytest.raises(PermissionDenied):
            await plain.delete_artifact(manifest["id"])
    async with StorageClient(**common, buffer_dir=tmp_path / "admin", user_id=True) as storage:
        assert (await storage.delete_artifact(manifest["id"])).deleted is True
        cleaned = await storage.cleanup(scopes=["temp_orphans"], dry_run=True)
        assert cleaned.dry_run is True
