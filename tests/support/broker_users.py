"""Broker users of a test's own, made with ``rabbitmqctl`` on the local test broker and deleted afterwards: a
second broker-validated identity (an admin of a worker, a console that is not one)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from tests.support.requirements import missing, require_rabbitmqctl


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def broker_account(amqp_url: str, prefix: str) -> Iterator[tuple[str, str]]:
    """A user named ``<prefix>-<random>`` with full permissions on ``/``: (its name, an AMQP URL logging in as
    it). Where rabbitmqctl cannot make one, the test stops by the suite's rule (skip locally, fail in CI)."""
    require_rabbitmqctl(amqp_url)
    name, password = f"{prefix}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    made = rabbitmqctl("add_user", name, password)
    if made.returncode != 0:
        missing(f"rabbitmqctl cannot add a user here: {made.stderr.strip()[:200]}")
    try:
        allowed = rabbitmqctl("set_permissions", "-p", "/", name, ".*", ".*", ".*")
        if allowed.returncode != 0:
            raise RuntimeError(f"rabbitmqctl set_permissions: {allowed.stderr.strip()}")
        parts = urlsplit(amqp_url)
        yield name, parts._replace(netloc=f"{name}:{password}@{parts.hostname}:{parts.port or 5672}").geturl()
    finally:
        rabbitmqctl("delete_user", name)
