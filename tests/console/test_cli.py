"""``storage-worker console`` is a subcommand of the worker's command line, found through its entry point."""

from __future__ import annotations

import os
import subprocess
import sys

from service.cli.commands import outside_commands
from tests.support.broker import BROKER_USER
from tests.support.console_stack import free_port


def storage_worker(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


def test_the_console_is_listed_and_takes_its_listen_address() -> None:
    assert "console" in outside_commands()
    listed = storage_worker("--help")
    assert listed.returncode == 0 and "console" in listed.stdout
    console_help = storage_worker("console", "--help")
    assert console_help.returncode == 0, console_help.stderr
    assert "--host" in console_help.stdout and "--port" in console_help.stdout


def test_a_bad_port_is_refused_before_anything_starts() -> None:
    refused = storage_worker("console", "--port", "70000")
    assert refused.returncode != 0
    assert "port" in (refused.stderr + refused.stdout).lower()
    assert "Traceback" not in refused.stderr


def test_a_broker_out_of_reach_stops_the_console_with_the_reason_and_no_password(amqp_url: str) -> None:
    closed = f"amqp://guest:hunter2@127.0.0.1:{free_port()}/"
    unreachable = storage_worker("console", "--port", str(free_port()), AMQP_URL=closed)
    assert unreachable.returncode == 1
    assert "cannot reach the broker at amqp://guest:***@127.0.0.1" in unreachable.stderr
    assert "hunter2" not in unreachable.stderr + unreachable.stdout and "Traceback" not in unreachable.stderr

    wrong_password = amqp_url.replace(f"{BROKER_USER}:", f"{BROKER_USER}:not-the-password-", 1)
    refused = storage_worker("console", "--port", str(free_port()), AMQP_URL=wrong_password)
    assert refused.returncode == 1 and "refused the user and password" in refused.stderr, refused.stderr
