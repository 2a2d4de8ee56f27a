"""Find a RabbitMQ for the tests: AMQP_URL, else localhost:5672, else a testcontainers RabbitMQ, else skip."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from contracts import topology

LOCAL_URL = "amqp://guest:guest@localhost:5672/"


def broker_user(url: str) -> str:
    """The user an AMQP URL logs in as (aio-pika's default is guest): the one ``user_id`` RabbitMQ accepts
    on that connection, and so the one broker-validated identity a test can act as."""
    return topology.broker_user(url)


BROKER_USER = broker_user(os.environ.get("AMQP_URL") or LOCAL_URL)
"""The test broker's user (a testcontainers broker logs in as guest too). The root test settings list it in
STORAGE_ADMINS, so a command sent with ``user_id`` = this user is an admin's."""

ADMIN_AMQP: dict[str, str] = {"user_id": BROKER_USER}
"""AMQP properties that make a command an admin's: ``bus.call(..., amqp=ADMIN_AMQP)``. Admin rights come
only from the broker-validated ``user_id`` (docs/contract.md §3); a body claim never grants them."""


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
        return True
    except Exception:
        return False


@contextmanager
def find_broker() -> Iterator[str | None]:
    """Yield an AMQP URL, or None when no broker can be had (the caller skips with a reason)."""
    if url := os.environ.get("AMQP_URL"):
        yield url
        return
    if _port_open("localhost", 5672):
        yield LOCAL_URL
        return
    if _docker_answers():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(5672)
            yield f"amqp://guest:guest@{host}:{port}/"
        return
    yield None
