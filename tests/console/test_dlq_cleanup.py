"""The dead-letter and cleanup pages: real dead letters (the worker's own rejections, and commands that
expired in a queue of the test's), peeked without consuming, requeued to a worker that answers, discarded;
an agent's dead letter never becomes the console's admin command; cleanups dry-run and run with progress."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import aio_pika
import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from buffer import SyncStorageClient
from console import dead_letters
from contracts import make_command, topology
from contracts.errors import NotFound
from tests.support.broker import broker_user
from tests.support.broker_users import broker_account
from tests.support.browser import Browser
from tests.support.console_stack import ConsoleStack

pytestmark = pytest.mark.timeout(240)

WAIT_S = 15.0


# -- the test's own AMQP moves (aio-pika, one short connection each: the stack is synchronous) ------------------


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def dlq_depth(stack: ConsoleStack) -> int:
    async def depth() -> int:
        async with await aio_pika.connect(stack.amqp_url) as conn:
            queue = await (await conn.channel()).declare_queue(stack.dlq, passive=True)
            count: int = queue.declaration_result.message_count or 0
            return count

    value: int = _run(depth())
    return value


def wait_depth(stack: ConsoleStack, count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while (depth := dlq_depth(stack)) != count:
        assert time.monotonic() < deadline, f"the DLQ holds {depth} messages, not {count}"
        time.sleep(0.05)


def purge_dlq(stack: ConsoleStack) -> None:
    async def purge() -> None:
        async with await aio_pika.connect(stack.amqp_url) as conn:
            await (await (await conn.channel()).declare_queue(stack.dlq, passive=True)).purge()

    _run(purge())


def rejected_by_worker(stack: ConsoleStack, body: bytes, **properties: Any) -> None:
    """A command the worker cannot read (not JSON, not an envelope): it rejects it to the DLQ; returns once it
    is there (one at a time, so the DLQ's order is the order of the calls)."""
    before = dlq_depth(stack)

    async def publish() -> None:
        async with await aio_pika.connect(stack.amqp_url) as conn:
            exchange = await (await conn.channel()).get_exchange(stack.exchange)
            await exchange.publish(aio_pika.Message(body, **properties), routing_key=topology.ROUTING_KEY_ANY)

    _run(publish())
    wait_depth(stack, before + 1)


def expired_in_a_queue(
    stack: ConsoleStack,
    body: bytes,
    *,
    amqp_url: str | None = None,
    routing_key: str = topology.ROUTING_KEY_ANY,
    **properties: Any,
) -> None:
    """A command that expired unread in a queue of the test's (TTL 0, dead-lettered to the worker's DLX with a
    command routing key): a dead letter as real as the worker's own, but one the worker will answer when it
    comes back. ``amqp_url`` publishes it as another broker user."""
    before = dlq_depth(stack)

    async def publish() -> None:
        async with await aio_pika.connect(amqp_url or stack.amqp_url) as conn:
            channel = await conn.channel()
            parked = await channel.declare_queue(
                f"dlq-test.parked.{uuid.uuid4().hex[:8]}",
                exclusive=True,  # gone with this connection, which stays until the message has moved on
                arguments={
                    "x-message-ttl": 0,
                    "x-dead-letter-exchange": topology.dlx_name(stack.exchange),
                    "x-dead-letter-routing-key": routing_key,
                },
            )
            await channel.default_exchange.publish(aio_pika.Message(body, **properties), routing_key=parked.name)
            deadline = time.monotonic() + WAIT_S
            while (
                (await channel.declare_queue(stack.dlq, passive=True)).declaration_result.message_count or 0
            ) <= before:
                assert time.monotonic() < deadline, "the parked command did not expire into the DLQ"
                await asyncio.sleep(0.02)

    _run(publish())


@contextmanager
def own_queue(stack: ConsoleStack, *bind_keys: str) -> Iterator[str]:
    """A queue of the test's (for replies, or bound to the command exchange to see what is published there)."""
    name = f"dlq-test.{uuid.uuid4().hex[:10]}"

    async def declare() -> None:
        async with await aio_pika.connect(stack.amqp_url) as conn:
            queue = await (await conn.channel()).declare_queue(name, auto_delete=False)
            for key in bind_keys:
                await queue.bind(stack.exchange, routing_key=key)

    async def delete() -> None:
        async with await aio_pika.connect(stack.amqp_url) as conn:
            await (await conn.channel()).queue_delete(name)

    _run(declare())
    try:
        yield name
    finally:
        _run(delete())


def collect(stack: ConsoleStack, queue: str, *ids: str) -> dict[str, aio_pika.abc.AbstractIncomingMessage]:
    """The messages whose message or correlation id is one of ``ids``, from ``queue``, waiting for all of them
    (anything else there is dropped)."""

    async def wait() -> dict[str, aio_pika.abc.AbstractIncomingMessage]:
        found: dict[str, aio_pika.abc.AbstractIncomingMessage] = {}
        async with await aio_pika.connect(stack.amqp_url) as conn:
            source = await (await conn.channel()).declare_queue(queue, passive=True)
            deadline = time.monotonic() + WAIT_S
            while len(found) < len(ids):
                assert time.monotonic() < deadline, f"only {sorted(found)} of {ids} arrived on {queue}"
                message = await source.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                for known in {message.message_id or "", message.correlation_id or ""} & set(ids):
                    found[known] = message
        return found

    found: dict[str, aio_pika.abc.AbstractIncomingMessage] = _run(wait())
    return found


def command(action: str, params: dict[str, Any] | None = None, *, source: str, trace: str | None = None) -> Any:
    context = {"requester_trace_id": trace} if trace else {}
    return make_command(action, params, source=source, context=context)


# -- the page's moves ----------------------------------------------------------------------------------------------


def keys_on(page: Browser) -> list[str]:
    return page.attrs("#dead-letters tr[data-message]", "data-message")


def row(page: Browser, key: str) -> Any:
    return page.find(f'#dead-letters tr[data-message="{key}"]')


def submit(page: Browser, button: Any, *, confirm: bool = False) -> Any:
    """Click a form's button (accepting its confirm dialog) and return the next page's flash message."""
    before = page.driver.find_element(By.TAG_NAME, "html")
    button.click()
    if confirm:
        page.wait(lambda: page.driver.switch_to.alert, "the confirm dialog").accept()
    page.wait(lambda: not _alive(before), "the page after the POST")
    return page.find(".flash")


def _alive(element: Any) -> bool:
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return False
    return True


@pytest.fixture(scope="module")
def agent_account(amqp_url: str) -> Iterator[tuple[str, str]]:
    """A broker user of the tests' own, no admin of the worker: (its name, its AMQP URL). One per module:
    rabbitmqctl takes seconds per call."""
    with broker_account(amqp_url, "dlq-agent") as account:
        yield account


@pytest.fixture
def empty_dlq(stack: ConsoleStack) -> ConsoleStack:
    """The stack with its DLQ emptied: positions on the page are this test's alone."""
    purge_dlq(stack)
    return stack


# -- dead letters ----------------------------------------------------------------------------------------------------


def test_the_dead_letters_are_listed_with_reason_and_body_and_peeking_consumes_nothing(
    page: Browser, empty_dlq: ConsoleStack
) -> None:
    stack = empty_dlq
    trace = f"t-dlq-{uuid.uuid4().hex[:8]}"
    hex_id, json_id = f"dl-hex-{uuid.uuid4().hex[:8]}", f"dl-json-{uuid.uuid4().hex[:8]}"
    rejected_by_worker(stack, b"\x00\xffnot json\x01", message_id=hex_id, app_id="agent-app")
    envelope = json.loads(command("save_thread", {"thread_id": "x"}, source="agent.dlq", trace=trace).to_json_bytes())
    envelope["specversion"] = "0.3"  # not a COMMAND envelope the worker can read
    rejected_by_worker(stack, json.dumps(envelope).encode(), message_id=json_id, content_type="application/json")
    rejected_by_worker(stack, b"[1, 2", message_id=f"dl-cut-{uuid.uuid4().hex[:8]}")  # cut short: not JSON

    page.open("/dlq")
    keys = keys_on(page)
    assert keys[:2] == [hex_id, json_id] and keys[2].startswith("dl-cut-") and len(keys) == 3
    hex_row, json_row = row(page, hex_id), row(page, json_id)
    assert hex_row.find_element(By.CSS_SELECTOR, ".first-reason").text == "rejected"
    death = hex_row.find_element(By.CSS_SELECTOR, ".death").text
    assert death.startswith(f"rejected \u00d71 in {stack.queue}"), death
    assert "agent-app" in hex_row.find_element(By.CSS_SELECTOR, ".identity").text
    hex_body = page.find(f'tr[data-body-of="{hex_id}"] pre.hex').text
    assert hex_body.startswith("00000000  00 ff 6e 6f 74 20 6a 73 6f 6e 01") and "|..not json.|" in hex_body
    assert json_row.find_element(By.CSS_SELECTOR, ".envelope").text == f"save_thread · agent.dlq · {trace}"
    assert '"specversion": "0.3"' in page.find(f'tr[data-body-of="{json_id}"] pre.json').text
    assert page.find("#depth").get_attribute("data-messages") == "3"
    page.screenshot("dlq")

    for _ in range(2):  # peeking again and again: the same messages in the same order, none consumed
        page.driver.refresh()
        assert keys_on(page) == keys
        assert dlq_depth(stack) == 3
    page.open("/dlq?limit=2")
    assert keys_on(page) == keys[:2] and "there are more" in page.find("#depth").text
    assert dlq_depth(stack) == 3


def test_a_requeued_dead_letter_is_answered_by_the_worker(page: Browser, empty_dlq: ConsoleStack) -> None:
    stack = empty_dlq
    with own_queue(stack) as replies:
        ping = command("ping", source="agent.dlq-requeue")
        kept = f"dl-kept-{uuid.uuid4().hex[:8]}"
        rejected_by_worker(stack, b"garbage", message_id=kept)
        expired_in_a_queue(
            stack,
            ping.to_json_bytes(),
            message_id=ping.id,
            correlation_id=ping.id,
            reply_to=replies,
            user_id=broker_user(stack.amqp_url),
            content_type="application/json",
        )
        page.open("/dlq")
        assert keys_on(page) == [kept, ping.id]
        assert row(page, ping.id).find_element(By.CSS_SELECTOR, ".first-reason").text == "expired"

        flash = submit(page, row(page, ping.id).find_element(By.CSS_SELECTOR, "button.requeue")).text
        assert flash.startswith(f"requeued 1 dead letter(s) to the exchange {stack.exchange}: {ping.id}"), flash
        assert "user_id" not in flash  # it was the console's own broker user: kept
        reply = json.loads(collect(stack, replies, ping.id)[ping.id].body)
        assert reply["type"] == "ai.team.result" and reply["data"]["output"]["node"] == "storage-primary"
        assert keys_on(page) == [kept]
        assert dlq_depth(stack) == 1


def test_discard_one_then_a_selection_and_a_message_gone_meanwhile(page: Browser, empty_dlq: ConsoleStack) -> None:
    stack = empty_dlq
    ids = [f"dl-{name}-{uuid.uuid4().hex[:6]}" for name in "abcde"]
    for message_id in ids:
        rejected_by_worker(stack, f"not json {message_id}".encode(), message_id=message_id)
    page.open("/dlq")
    assert keys_on(page) == ids

    flash = submit(page, row(page, ids[1]).find_element(By.CSS_SELECTOR, "button.discard"), confirm=True)
    assert flash.text == f"discarded 1 dead letter(s): {ids[1]}."
    assert keys_on(page) == [ids[0], *ids[2:]]

    for chosen in (ids[0], ids[3]):
        row(page, chosen).find_element(By.CSS_SELECTOR, "input[name=id]").click()
    flash = submit(page, page.find("#discard-selected"), confirm=True)
    assert flash.text == f"discarded 2 dead letter(s): {ids[0]}, {ids[3]}."
    assert keys_on(page) == [ids[2], ids[4]]
    assert dlq_depth(stack) == 2

    async def taken_by_someone_else() -> None:  # another console (or a script) settles it behind our back
        async with await aio_pika.connect_robust(stack.amqp_url) as conn:
            await dead_letters.discard(conn, stack.dlq, [ids[4]])

    _run(taken_by_someone_else())
    flash = submit(page, row(page, ids[4]).find_element(By.CSS_SELECTOR, "button.requeue"))
    assert "not found, nothing done" in flash.text and "bad" in (flash.get_attribute("class") or "")
    assert keys_on(page) == [ids[2]]


def test_an_agents_dead_letter_requeued_by_the_admin_console_keeps_no_admin_identity(
    page: Browser, empty_dlq: ConsoleStack, agent_account: tuple[str, str]
) -> None:
    """The attack: an agent parks an admin-only command in the DLQ and waits for an admin to requeue it. The
    copy goes out without the console's user_id, so the worker judges it as the agent it is."""
    stack = empty_dlq
    agent_user, agent_url = agent_account
    with (
        own_queue(stack) as replies,
        own_queue(stack, topology.ROUTING_KEY_ANY) as seen,
    ):
        attack = command("cleanup", {"dry_run": True}, source="agent.mallory")
        expired_in_a_queue(
            stack,
            attack.to_json_bytes(),
            amqp_url=agent_url,
            message_id=attack.id,
            correlation_id=attack.id,
            reply_to=replies,
            user_id=agent_user,  # the broker vouches for it: it is the agent's own connection
            content_type="application/json",
        )
        own = command("cleanup", {"dry_run": True}, source="agent.ops")
        expired_in_a_queue(
            stack,
            own.to_json_bytes(),
            message_id=own.id,
            correlation_id=own.id,
            reply_to=replies,
            user_id=broker_user(stack.amqp_url),  # the console's own broker user: an admin's command
        )
        page.open("/dlq")
        assert keys_on(page) == [attack.id, own.id]
        assert row(page, attack.id).find_element(By.CSS_SELECTOR, ".identity").text.startswith(agent_user)

        page.find("#select-all").click()
        flash = submit(page, page.find("#requeue-selected")).text
        assert f"requeued 2 dead letter(s) to the exchange {stack.exchange}" in flash, flash
        assert f"1 of them ({attack.id}) went without their user_id" in flash

        copies = collect(stack, seen, attack.id, own.id)
        copy = copies[attack.id]
        assert copy.user_id is None and copy.routing_key == topology.ROUTING_KEY_ANY
        assert not any(k.startswith(("x-death", "x-first-death")) for k in (copy.headers or {}))
        assert copy.expiration is None and copy.reply_to == replies and copy.correlation_id == attack.id
        assert copies[own.id].user_id == broker_user(stack.amqp_url)

        answers = collect(stack, replies, attack.id, own.id)
        refused = json.loads(answers[attack.id].body)
        assert refused["type"] == "ai.team.error" and refused["data"]["error"]["code"] == "PERMISSION_DENIED"
        answered = json.loads(answers[own.id].body)
        assert answered["type"] == "ai.team.result" and answered["data"]["output"]["dry_run"] is True
    assert dlq_depth(stack) == 0


def test_a_console_that_is_no_admin_gets_403_and_its_posts_change_nothing(
    reader_page: Browser, empty_dlq: ConsoleStack
) -> None:
    stack = empty_dlq
    victim = f"dl-victim-{uuid.uuid4().hex[:8]}"
    rejected_by_worker(stack, b"keep me", message_id=victim)
    for path in ("/dlq", "/cleanup"):
        reader_page.open(path)
        assert "for admins only" in reader_page.find("#error-message").text
        assert "not in STORAGE_ADMINS" in reader_page.find("#error-message").text
    with httpx.Client(base_url=reader_page.base_url) as http:
        assert http.get("/dlq").status_code == 403 and http.get("/cleanup").status_code == 403
        for action in ("/dlq/discard", "/dlq/requeue"):
            refused = http.post(action, data={"one": victim})
            assert refused.status_code == 403 and "set-cookie" not in refused.headers
        assert http.post("/cleanup/run", data={"scope": "expired_memory"}).status_code == 403
    assert dlq_depth(stack) == 1


# -- cleanup ----------------------------------------------------------------------------------------------------------


def expire_memory(client: SyncStorageClient, namespace: str) -> None:
    client.put_memory([namespace], "soon-gone", {"v": 1}, ttl_seconds=1)
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            client.get_memory([namespace], "soon-gone")
        except NotFound:
            return
        assert time.monotonic() < deadline, "the item did not expire"
        time.sleep(0.2)


def dry_counts(page: Browser) -> dict[str, int]:
    page.open("/cleanup")
    page.find("#scopes")
    return {
        row.get_attribute("data-scope") or "": int(row.get_attribute("data-count") or "-1")
        for row in page.find_all("#scopes tr[data-scope]")
    }


def test_cleanup_dry_run_then_a_run_with_progress(page: Browser, stack: ConsoleStack) -> None:
    with stack.client("agent.cleanup-page") as client:
        expire_memory(client, f"cleanup-{uuid.uuid4().hex[:8]}")
    counts = dry_counts(page)
    assert counts["expired_memory"] >= 1 and len(counts) >= 10 and next(iter(counts)) == "expired_artifacts"
    page.screenshot("cleanup")

    page.click("#run-cleanup")
    page.wait(lambda: page.path.startswith("/cleanup?run="), "the run's page")
    done = page.find('#progress[data-state="done"]')  # the page reloads itself until then
    assert done.get_attribute("data-done") == done.get_attribute("data-total") == str(len(counts))
    rows = {r.get_attribute("data-scope"): r for r in page.find_all("#progress tr[data-scope]")}
    assert list(rows) == list(counts)
    assert all(r.get_attribute("data-state") == "done" for r in rows.values()), page.body()
    assert int(rows["expired_memory"].get_attribute("data-count") or 0) >= 1
    assert dry_counts(page)["expired_memory"] == 0


def test_a_second_run_while_one_runs_is_refused_and_progress_shows_the_scope_at_work(
    page: Browser, stack: ConsoleStack
) -> None:
    assert stack.worker is not None
    os.kill(stack.worker.popen.pid, signal.SIGSTOP)  # the first scope's command waits in the queue
    try:
        with httpx.Client(base_url=stack.base_url) as http:
            started = http.post("/cleanup/run", data={"scope": ["inbox", "expired_memory"]})
            assert started.status_code == 303
            run_path = started.headers["location"]
            again = http.post("/cleanup/run", data={"scope": "inbox"})
            assert again.status_code == 303 and again.headers["location"] == run_path
        page.open(run_path)
        assert page.find("#progress").get_attribute("data-state") == "running"
        assert page.find('#progress tr[data-scope="inbox"]').get_attribute("data-state") == "running"
        assert page.find('#progress tr[data-scope="expired_memory"]').get_attribute("data-state") == "waiting"
        page.open("/cleanup")
        assert page.has("#busy") and not page.has("#scopes")
        page.click("#busy a")
    finally:
        os.kill(stack.worker.popen.pid, signal.SIGCONT)
    page.find('#progress[data-state="done"]')
    assert page.texts("#progress tr[data-scope] .badge") == ["done", "done"]


def test_a_scope_the_worker_refuses_shows_its_error_in_the_progress(
    page: Browser, stack: ConsoleStack, agent_account: tuple[str, str]
) -> None:
    """A console configured as admin for a broker user the worker does not list: the worker still refuses
    each scope, and the progress says so (the worker's ACL is the gate, the console's list only a hint)."""
    user, url = agent_account
    base = stack.start_console(amqp_url=url, STORAGE_ADMINS=user)
    with httpx.Client(base_url=base) as http:
        assert http.get("/cleanup").status_code == 403  # the worker refuses the dry run
        run_path = http.post("/cleanup/run", data={"scope": "expired_memory"}).headers["location"]
    mistaken = Browser(page.driver, base, page.shots).open(run_path)
    mistaken.find('#progress[data-state="done"]')
    failed = mistaken.find('#progress tr[data-scope="expired_memory"]')
    assert failed.get_attribute("data-state") == "error"
    assert failed.find_element(By.CSS_SELECTOR, ".scope-error").text.startswith("PERMISSION_DENIED")


def test_a_message_without_message_id_is_named_by_its_body_and_requeued_to_its_first_command_key() -> None:
    """aio-pika always sets a message_id; other clients need not, and such a dead letter still has a name."""
    death = {"reason": "expired", "count": 2, "queue": "parked", "routing-keys": ["parked"], "time": None}
    first = {"reason": "rejected", "count": 1, "queue": "storage.commands", "routing-keys": ["cmd.storage.node-2"]}
    message: Any = SimpleNamespace(
        message_id=None,
        body=b"\x00\x01",
        headers={"x-death": [death, first], "x-first-death-reason": "rejected"},
        routing_key="storage.dlq",
        user_id=None,
        app_id=None,
        content_type=None,
    )
    shown = dead_letters.view(1, message)
    assert shown.key == "sha256:" + hashlib.sha256(b"\x00\x01").hexdigest()[:32] and not shown.is_json
    assert shown.death is not None and (shown.death.reason, shown.death.count) == ("expired", 2)
    assert dead_letters.requeue_key(message) == "cmd.storage.node-2"  # the oldest death's key
    message.headers = {}
    assert dead_letters.requeue_key(message) == topology.ROUTING_KEY_ANY  # never had a command key
