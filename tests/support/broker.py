"""Find a RabbitMQ for the tests: AMQP_URL, else localhost:5672, else a testcontainers RabbitMQ, else skip."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

LOCAL_URL = "amqp://guest:guest@localhost:5672/"


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
