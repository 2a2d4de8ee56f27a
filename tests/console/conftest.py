"""Fixtures of the console tests: a worker and consoles as real processes on the real broker, on each
database, and one headless Chromium for the session.

- ``stack``: a worker and its admin console (no token), shared by the tests of one database; tests keep to
  their own trace, thread and namespace names, so they do not see each other's data.
- ``page``: the admin console in the browser (cookies cleared, so no test inherits a login).
- ``reader_page``: a console acting as a broker user of its own, who is no admin.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from tests.support.broker_users import broker_account
from tests.support.browser import Browser, open_chromium
from tests.support.console_stack import ConsoleStack, console_stack
from tests.support.databases import BACKENDS, create_pg_database, drop_pg_database
from tests.support.requirements import missing, require_postgres
from tests.support.workers import delete_topology

NO_CHROMIUM = "no headless Chromium: apt-get install chromium chromium-driver (or set STORAGE_TEST_CHROMIUM)"


@pytest.fixture(scope="session")
def chromium() -> Iterator[webdriver.Chrome]:
    driver = open_chromium()
    if driver is None:
        missing(NO_CHROMIUM)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest, amqp_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleStack]:
    folder = tmp_path_factory.mktemp(f"console-{request.param}")
    database_url: str | None = None
    dropped: str | None = None
    if request.param == "postgres":
        asyncio.run(require_postgres())
        database_url, dropped = asyncio.run(create_pg_database())
    try:
        with console_stack(amqp_url, folder, database_url) as started:
            try:
                yield started
            except BaseException:
                print(started.report())
                raise
            finally:
                asyncio.run(delete_topology(started))
    finally:
        if dropped is not None:
            asyncio.run(drop_pg_database(dropped))


@pytest.fixture
def page(chromium: webdriver.Chrome, stack: ConsoleStack, tmp_path: Path) -> Browser:
    chromium.delete_all_cookies()
    return Browser(chromium, stack.base_url, tmp_path)


@pytest.fixture(scope="session")
def reader_url(stack: ConsoleStack) -> Iterator[str]:
    """A console acting as a broker user that is not in STORAGE_ADMINS; its base URL."""
    with broker_account(stack.amqp_url, "console-reader") as (_, url):
        yield stack.start_console(amqp_url=url)


@pytest.fixture
def reader_page(chromium: webdriver.Chrome, reader_url: str, tmp_path: Path) -> Browser:
    chromium.delete_all_cookies()
    return Browser(chromium, reader_url, tmp_path)
