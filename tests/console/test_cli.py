"""``storage-worker console`` is a subcommand of the worker's command line, found through its entry point."""

from __future__ import annotations

import subprocess
import sys

from service.cli.commands import outside_commands


def storage_worker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=60, check=False
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
