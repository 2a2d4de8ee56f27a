"""The /threads and /memory pages: finding a client's dialogs, reading one back to its start, browsing memory
by namespace, key and label; what another broker user may not read never shows; hostile text stays text."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.support.browser import Browser
from tests.support.console_stack import ConsoleStack

pytestmark = pytest.mark.timeout(180)

HOSTILE = "<img src=x onerror=alert(1)>"
SMALL_PAGE = 5


def _tag() -> str:
    return uuid.uuid4().hex[:12]


def _inn() -> str:
    """A ten-digit tax number no other test saved."""
    return str(uuid.uuid4().int)[:10]


@pytest.fixture(scope="module")
def small_pages(stack: ConsoleStack) -> Iterator[str]:
    """The admin's console with pages of five rows: paging shows after a handful of items."""
    yield stack.start_console(STORAGE_CONSOLE_PAGE_SIZE=str(SMALL_PAGE))


def _listed(page: Browser) -> list[str]:
    return page.attrs("#threads tr[data-thread]", "data-thread")


def test_a_metadata_filter_or_a_name_finds_exactly_the_matching_thread(page: Browser, stack: ConsoleStack) -> None:
    tag, inn, other_inn = _tag(), _inn(), _inn()
    romashka, lyutik = f"romashka-{tag}", f"lyutik-{tag}"
    with stack.client("agent.threads") as client:
        client.save_thread(
            romashka,
            [{"role": "user", "content": "Assess the company."}, {"role": "assistant", "content": HOSTILE}],
            metadata={"client": f"Romashka {tag}", "inn": int(inn), "title": f"Credit check {HOSTILE}", "t": tag},
        )
        client.save_thread(
            lyutik,
            [{"role": "user", "content": "hello"}],
            metadata={"client": f"Lyutik {tag}", "inn": other_inn, "t": tag},
        )

    page.open("/threads")
    page.fill("#meta-new", f"inn={inn}")  # saved as a number, found by its digits
    page.click("#search")
    page.wait(lambda: _listed(page) == [romashka], "only the thread of that INN")
    assert f"meta=inn%3D{inn}" in page.path  # the filter is in the address
    row = page.find(f'#threads tr[data-thread="{romashka}"]')
    assert f"Credit check {HOSTILE}" in row.text and "agent.threads" in row.text and f"inn={inn}" in row.text
    assert row.find_element("css selector", "td.num").text == "2"  # its messages

    page.open(f"/threads?q=lyutik+{tag}")  # a part of a name, any case
    assert _listed(page) == [lyutik]
    page.open(f"/threads?q={tag}&meta=client%3DLyutik+{tag}")
    assert _listed(page) == [lyutik]
    page.open(f"/threads?meta=t%3D{tag}")
    assert _listed(page) == [lyutik, romashka]  # newest first
    page.screenshot("threads")
    page.click(f'#threads tr[data-thread="{lyutik}"] a')  # open one from the listing
    page.wait(lambda: page.path == f"/threads/{lyutik}", "the thread's page")
    page.open(f"/threads?meta=t%3D{tag}&meta=inn%3D{_inn()}")
    assert page.has("#no-threads") and not _listed(page)

    page.open(f"/threads/{romashka}")
    assert page.find("#thread-id").text == romashka
    assert page.texts("#messages li[data-message] pre") == ["Assess the company.", HOSTILE]  # as text
    assert page.attrs("#messages li[data-message]", "data-role") == ["user", "assistant"]
    assert not page.find_all("main img") and f"Credit check {HOSTILE}" in page.find("#thread-info h2").text
    assert page.has("#history-start") and not page.has("#older")
    page.screenshot("thread")


def test_older_pages_back_through_the_whole_history_with_no_gap(page: Browser, stack: ConsoleStack) -> None:
    """120 messages at 50 a page: the newest 50, then 50, then the first 20; each in order, none twice."""
    thread_id = f"long-{_tag()}/with?odd#chars"  # the id is quoted whole in every link
    sent = [f"message {n:03d}" for n in range(120)]
    with stack.client("agent.threads") as client:
        client.save_thread(thread_id, [{"role": "user", "content": text} for text in sent])

    page.open("/threads/" + quote(thread_id, safe=""))
    assert page.find("#thread-id").text == thread_id and page.find("#message-count").text == "120"
    pages = [page.texts("#messages li[data-message] pre")]
    while page.has("#older"):
        page.click("#older")
        page.wait(lambda: page.texts("#messages li[data-message] pre")[0] != pages[-1][0], "an older page")
        pages.append(page.texts("#messages li[data-message] pre"))
    assert [len(shown) for shown in pages] == [50, 50, 20]
    assert [text for shown in reversed(pages) for text in shown] == sent
    assert page.has("#history-start")
    page.click("#newest")
    page.wait(lambda: page.texts("#messages li[data-message] pre")[-1] == "message 119", "the newest page again")


def test_a_small_page_walks_threads_and_memory_by_cursor(page: Browser, stack: ConsoleStack, small_pages: str) -> None:
    """Pages of five: seven threads of one filter come as 5 + 2 and the cursor keeps the filter; a thread of 12
    messages pages back 5, 5, 2; seven memory items 5 + 2."""
    tag = _tag()
    with stack.client("agent.paging") as client:
        for n in range(7):
            client.save_thread(f"page-{tag}-{n}", [{"role": "user", "content": f"m{n}"}], metadata={"batch": tag})
        client.save_thread(f"talk-{tag}", [{"role": "user", "content": f"line {n}"} for n in range(12)])
        for n in range(7):
            client.put_memory([f"paging-{tag}"], f"k{n}", {"n": n})

    small = Browser(page.driver, small_pages, page.shots)
    small.open(f"/threads?meta=batch%3D{tag}")
    first = _listed(small)
    small.click("#next-page")
    small.wait(lambda: "cursor=" in small.path and f"batch%3D{tag}" in small.path, "the next page, filter kept")
    second = _listed(small)
    assert first == [f"page-{tag}-{n}" for n in (6, 5, 4, 3, 2)] and second == [f"page-{tag}-1", f"page-{tag}-0"]
    assert not small.has("#next-page") and small.has("#first-page")

    small.open(f"/threads/talk-{tag}")
    seen = [small.texts("#messages pre")]
    while small.has("#older"):
        small.click("#older")
        small.wait(lambda: small.texts("#messages pre")[0] != seen[-1][0], "an older page")
        seen.append(small.texts("#messages pre"))
    assert [text for shown in reversed(seen) for text in shown] == [f"line {n}" for n in range(12)]
    assert [len(shown) for shown in seen] == [5, 5, 2]

    small.open(f"/memory?prefix=paging-{tag}")
    keys = small.attrs("#memory tr[data-key]", "data-key")
    small.click("#next-page")
    small.wait(lambda: "cursor=" in small.path, "the next page of items")
    assert keys == ["k6", "k5", "k4", "k3", "k2"] and small.attrs("#memory tr[data-key]", "data-key") == ["k1", "k0"]

    small.open(f"/memory?prefix=paging-{tag}&key=k")  # a key prefix reads on until a page's worth matched
    assert len(small.attrs("#memory tr[data-key]", "data-key")) == 5 and small.has("#next-page")
    small.open(f"/memory?prefix=paging-{tag}&key=k0")  # two pages read, one match
    assert small.attrs("#memory tr[data-key]", "data-key") == ["k0"] and not small.has("#next-page")
    assert small.find("#scanned").text.startswith("1 of 7 items read")


def test_memory_shows_the_tree_the_ttl_left_and_narrows_by_prefix_key_and_label(
    page: Browser, stack: ConsoleStack
) -> None:
    root = f"mem-{_tag()}"
    with stack.client("agent.memory") as client:
        client.put_memory([root, "alpha"], "fx:EURUSD", {"rate": 1.08}, ttl_seconds=3600, labels={"source": "ecb"})
        client.put_memory([root, "alpha"], "fx:GBPUSD", {"rate": 0.85}, ttl_seconds=3600, labels={"source": "boe"})
        client.put_memory([root, "alpha"], "note", {"text": HOSTILE}, labels={"source": "ecb", "kind": "note"})
        client.put_memory([root, "beta", "deep"], "fx:JPY", {"rate": 150}, ttl_seconds=600, labels={"source": "boj"})

    page.open(f"/memory?prefix={root}")
    tree = page.attrs("#namespaces a[data-namespace]", "data-namespace")
    assert {root, f"{root}/alpha", f"{root}/beta"} <= set(tree) and f"{root}/beta/deep" not in tree  # one level down
    keys = page.attrs("#memory tr[data-key]", "data-key")
    assert keys == ["fx:JPY", "note", "fx:GBPUSD", "fx:EURUSD"]  # newest first
    ttl = {
        row.get_attribute("data-key"): row.find_element("css selector", "td.ttl")
        for row in page.find_all("#memory tr[data-key]")
    }
    left = int(ttl["fx:EURUSD"].get_attribute("data-ttl-left") or "0")
    assert 3000 < left < 3600 and ttl["fx:EURUSD"].text.startswith("59 min ")
    assert 0 < int(ttl["fx:JPY"].get_attribute("data-ttl-left") or "0") < 600
    assert ttl["note"].text == "never"
    assert HOSTILE in page.find('#memory tr[data-key="note"] td.value').text and not page.find_all("main img")
    page.screenshot("memory")

    page.click(f'#namespaces a[data-namespace="{root}/beta"]')  # prefix: one namespace and what is under it
    page.wait(lambda: page.attrs("#memory tr[data-key]", "data-key") == ["fx:JPY"], "only beta's item")
    assert f"{root}/beta/deep" in page.attrs("#namespaces a[data-namespace]", "data-namespace")  # expanded

    page.open(f"/memory?prefix={root}")
    page.fill("#label-new", "source=ecb")
    page.click("#search")
    page.wait(lambda: page.attrs("#memory tr[data-key]", "data-key") == ["note", "fx:EURUSD"], "the ecb items")
    assert "label=source%3Decb" in page.path and f"prefix={root}" in page.path
    page.fill("#key", "fx:")
    page.click("#search")
    page.wait(lambda: page.attrs("#memory tr[data-key]", "data-key") == ["fx:EURUSD"], "ecb's fx items")
    page.open(f"/memory?prefix={root}&prefix=alpha&label=kind%3Dnote&label=source%3Decb")
    assert page.attrs("#memory tr[data-key]", "data-key") == ["note"]


def test_the_reader_sees_only_what_its_broker_user_may_read(
    page: Browser, reader_page: Browser, stack: ConsoleStack
) -> None:
    """agent.x's private thread and memory never show to another broker user, not even their names; its public
    ones do; the admin's console sees both."""
    tag = _tag()
    private, public = f"private-{tag}", f"public-{tag}"
    with stack.client("agent.x") as client:
        client.save_thread(
            private, [{"role": "user", "content": "merger plan"}], metadata={"title": f"Secret {tag}", "p": tag}
        )
        client.save_thread(public, [{"role": "user", "content": "hi"}], metadata={"p": tag}, visibility="public")
        client.put_memory([f"x-{tag}", "hidden"], "plan", {"secret": True})
        client.put_memory([f"x-{tag}", "shared"], "faq", {"answer": 42}, visibility="public")

    reader_page.open(f"/threads?meta=p%3D{tag}")
    assert _listed(reader_page) == [public]
    reader_page.open(f"/threads?q=secret+{tag}")
    assert not _listed(reader_page)
    reader_page.open(f"/threads/{private}")
    assert f"thread {private} not found" in reader_page.find("#error-message").text
    assert f"Secret {tag}" not in reader_page.driver.page_source and "merger" not in reader_page.driver.page_source
    assert "reader" in reader_page.find("#identity").text

    reader_page.open(f"/memory?prefix=x-{tag}")
    assert f"x-{tag}/hidden" not in reader_page.attrs("#namespaces a[data-namespace]", "data-namespace")
    assert f"x-{tag}/shared" in reader_page.attrs("#namespaces a[data-namespace]", "data-namespace")
    assert reader_page.attrs("#memory tr[data-key]", "data-key") == ["faq"]
    reader_page.open("/memory")
    assert f"x-{tag}" in reader_page.attrs("#namespaces a[data-namespace]", "data-namespace")  # the public one's root

    page.open(f"/threads?meta=p%3D{tag}")
    assert _listed(page) == [public, private]
    page.open(f"/threads/{private}")
    assert page.texts("#messages pre") == ["merger plan"]
    page.open(f"/memory?prefix=x-{tag}")
    assert {f"x-{tag}/hidden", f"x-{tag}/shared"} <= set(page.attrs("#namespaces a[data-namespace]", "data-namespace"))
    assert page.attrs("#memory tr[data-key]", "data-key") == ["faq", "plan"]


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/threads?meta=inn", "metadata filter 'inn' is not key=value"),
        ("/threads?meta=%3D5", "metadata filter '=5' is not key=value"),
        ("/threads?q=ab", "search must be at least 3 characters"),
        ("/threads?" + "&".join(f"meta=k{n}%3D1" for n in range(33)), "at most 32 metadata filters, got 33"),
        ("/threads?meta=a%3D1&meta=a%3D2", "metadata filter 'a' is given twice"),
        ("/threads?meta=k%3D" + "v" * 300, "has a value of 300 characters, at most 256"),
        ("/threads?cursor=not-a-cursor", "cursor"),
        ("/threads/" + "t" * 300, "thread_id"),
        ("/memory?label=source", "label filter 'source' is not key=value"),
        ("/memory?" + "&".join(f"prefix=p{n}" for n in range(9)), "at most 8 parts, the prefix has 9"),
        ("/memory?prefix=" + "p" * 200, "is 200 characters, at most 128"),
        ("/memory?label=" + "k" * 70 + "%3Dv", "at most 64"),
        ("/memory?cursor=garbage", "cursor"),
    ],
)
def test_bad_filters_are_a_400_that_says_what_is_wrong(stack: ConsoleStack, path: str, says: str) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=15) as http:
        answer = http.get(path)
    assert answer.status_code == 400, answer.text[:500]
    assert 'id="error-message"' in answer.text and says in answer.text.replace("&#39;", "'"), answer.text[-1500:]
