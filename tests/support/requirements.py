"""The one rule for a test whose service is missing: a skip on a developer's machine, a failure in CI.

A test that needs PostgreSQL, RabbitMQ, or the ``rabbitmq-server`` or PostgreSQL server binaries stops
through :func:`missing`. Locally that is a skip naming what is missing, so the suite runs on a laptop
without them. With ``CI`` set (the CI runner sets ``CI=true``) it is a failure: a stopped database must
turn CI red, not quietly take a third of the suite with it. ``tests/test_skip_rule.py`` checks that no
test skips any other way.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

from tests.support.broker import find_broker
from tests.support.databases import PG_ADMIN_DSN, pg_available
from tests.support.private_broker import rabbitmq_bin_dir
from tests.support.private_postgres import postgres_bin_dir

NO_POSTGRES = f"no PostgreSQL at {urlsplit(PG_ADMIN_DSN).netloc} (set STORAGE_TEST_PG_DSN)"
NO_RABBITMQ = "no RabbitMQ: set AMQP_URL, run one on localhost:5672, or start a Docker engine"


def in_ci() -> bool:
    """Whether the CI runner runs these tests (``CI`` set to anything but empty, 0 or false)."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def missing(reason: str) -> NoReturn:
    """Stop the current test because ``reason`` keeps it from running here: skip locally, fail in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: a test that cannot run fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


@contextmanager
def require_rabbitmq() -> Iterator[str]:
    """A RabbitMQ for the tests (see :func:`tests.support.broker.find_broker`); its AMQP URL."""
    with find_broker() as url:
        if url is None:
            missing(NO_RABBITMQ)
        yield url


async def require_postgres() -> None:
    """The machine's PostgreSQL (``STORAGE_TEST_PG_DSN``) answers."""
    if not await pg_available():
        missing(NO_POSTGRES)


def require_rabbitmq_server() -> Path:
    """The ``rabbitmq-server`` binaries, for tests that start (and kill) a private node; their folder."""
    if (found := rabbitmq_bin_dir()) is None:
        missing("rabbitmq-server is not installed: this test needs a private RabbitMQ node to kill")
    return found


def require_postgres_server() -> Path:
    """The PostgreSQL server binaries (initdb, pg_ctl), for tests that run and stop a private cluster."""
    if (found := postgres_bin_dir()) is None:
        missing("PostgreSQL server binaries (initdb, pg_ctl) are not installed: this test stops a private cluster")
    return found


def require_rabbitmqctl(amqp_url: str) -> None:
    """``rabbitmqctl`` reaches the test broker (a local one; a testcontainers or remote broker has none here)."""
    if shutil.which("rabbitmqctl") is None or urlsplit(amqp_url).hostname not in {"127.0.0.1", "localhost"}:
        missing("needs rabbitmqctl for the test broker (not available for a testcontainers or remote broker)")
