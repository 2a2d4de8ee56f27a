"""The overview page and the console's gate: what an operator sees first, and who gets in."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from tests.support.browser import Browser
from tests.support.console_stack import ConsoleStack

pytestmark = pytest.mark.timeout(180)


def test_the_overview_shows_the_node_the_queues_and_what_is_stored(page: Browser, stack: ConsoleStack) -> None:
    with stack.client("agent.overview") as client:
        client.save_thread("overview-thread", [{"role": "user", "content": "hello"}])

    page.open("/")
    node = page.reload_until("#nodes tr[data-node]")
    assert "0.1.0" in node.text  # the version, from the heartbeat
    assert node.get_attribute("data-node") == "storage-primary" and " ready " in node.text, node.text
    depths = {row.get_attribute("data-queue"): row.text for row in page.find_all("#queues tr[data-queue]")}
    assert set(depths) == {stack.queue, stack.dlq}
    assert depths[stack.queue].split()[-1] == "1"  # one consumer: the worker
    assert page.find("#stats .big").text.isdigit()
    with stack.client("agent.overview") as client:
        for _ in range(20):
            client.ping()
    rate = page.reload_until("#rate", timeout_s=30)  # two scrapes of the worker's /metrics, 5 s apart
    assert rate.text.endswith("commands/s")
    page.wait(lambda: not page.driver.refresh() and float(page.find("#rate").text.split()[0]) > 0, "a rate above 0")
    assert page.find("#identity").text.startswith("as guest") and page.has("#identity .admin")
    page.screenshot("overview")


def test_a_node_that_stops_beating_is_marked_stale(page: Browser, stack: ConsoleStack) -> None:
    """The worker frozen (SIGSTOP) past the console's staleness limit shows as stale, and fresh once it beats."""
    url = stack.start_console(STORAGE_CONSOLE_STALE="3", STORAGE_CONSOLE_CALL_TIMEOUT="2")
    watching = Browser(page.driver, url, page.shots)
    row = watching.open("/").reload_until("#nodes tr[data-node]")
    assert "stale" not in (row.get_attribute("class") or "")
    assert stack.worker is not None
    os.kill(stack.worker.popen.pid, signal.SIGSTOP)
    try:
        watching.reload_until("#nodes tr.stale[data-node]", timeout_s=20)
        assert "stale" in watching.find("#nodes tr.stale").text
    finally:
        os.kill(stack.worker.popen.pid, signal.SIGCONT)
    watching.wait(lambda: not watching.driver.refresh() and not watching.has("#nodes tr.stale"), "a fresh node")


def test_with_a_token_the_console_asks_for_it_and_remembers_the_login(page: Browser, stack: ConsoleStack) -> None:
    token = "s3cret-console-token"
    url = stack.start_console(STORAGE_CONSOLE_TOKEN=token)
    gated = Browser(page.driver, url, page.shots)

    gated.open("/artifacts?trace_id=t-login")
    assert gated.path.startswith("/login?next=")
    gated.fill("#token", "not-the-token")
    gated.click("#login")
    assert gated.find("#login-error").is_displayed()

    gated.fill("#token", token)
    gated.click("#login")
    gated.wait(lambda: gated.path == "/artifacts?trace_id=t-login", "the page asked for before the login")
    cookie = page.driver.get_cookie("storage_console")
    assert cookie is not None and token not in cookie["value"] and cookie["httpOnly"]
    gated.open("/")
    assert gated.has("#queues") and gated.has("#identity form")  # still in, and a way out

    gated.click("#identity button")
    gated.wait(lambda: gated.path.startswith("/login"), "the login form after logging out")
    gated.open("/")
    assert gated.path.startswith("/login")


def test_a_script_uses_the_bearer_token_and_anything_else_gets_401(stack: ConsoleStack) -> None:
    url = stack.start_console(STORAGE_CONSOLE_TOKEN="bearer-token")
    with httpx.Client(base_url=url) as http:
        assert http.get("/healthz").status_code == 200  # a probe needs no token
        refused = http.get("/artifacts", headers={"Accept": "application/json"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert http.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = http.get("/", headers={"Authorization": "Bearer bearer-token"})
        assert ok.status_code == 200 and 'id="stats"' in ok.text
        assert float(ok.headers["server-timing"].removeprefix("app;dur=")) > 0


def test_a_form_posted_from_another_site_is_refused(stack: ConsoleStack) -> None:
    """Without a token there is no cookie to withhold: the Origin check is what stops a cross-site form."""
    with httpx.Client(base_url=stack.base_url) as http:
        forged = http.post("/logout", headers={"Origin": "http://evil.example"})
        assert forged.status_code == 403
        own = http.post("/logout", headers={"Origin": stack.base_url})
        assert own.status_code == 303


def test_an_admin_pauses_and_resumes_a_node_from_the_overview(page: Browser, stack: ConsoleStack) -> None:
    """The node's button sends ``ctl.<node>.pause``; its heartbeat then says paused, and ``resume`` undoes it."""
    page.open("/")
    page.reload_until("#nodes tr[data-node] button.steer")
    try:
        page.click("#nodes tr[data-node='storage-primary'] button.steer")
        assert page.find("#flash").text.startswith("sent ctl.storage-primary.pause")
        page.reload_until("#nodes tr[data-node='storage-primary'] .badge.warn", timeout_s=20)
        assert page.find("#nodes tr[data-node='storage-primary'] button.steer").text == "resume"
    finally:
        with httpx.Client(base_url=page.base_url) as http:  # whatever happened: the shared worker goes on
            http.post("/nodes/storage-primary/resume", headers={"Origin": page.base_url})
    page.wait(
        lambda: not page.driver.refresh() and " ready " in page.find("#nodes tr[data-node='storage-primary']").text,
        "the node ready again",
        timeout_s=20,
    )


def test_a_reader_console_cannot_steer_nodes(reader_page: Browser) -> None:
    reader_page.open("/")
    assert not reader_page.has("button.steer")
    with httpx.Client(base_url=reader_page.base_url) as http:
        refused = http.post("/nodes/storage-primary/pause")
        assert refused.status_code == 403 and "set-cookie" not in refused.headers
