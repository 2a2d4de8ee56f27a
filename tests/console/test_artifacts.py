"""The artifact pages: the filtered, paged listing, one artifact with its download link and versions, and its
lineage drawn as an SVG whose nodes lead to their own pages; what the console may not read stays unnamed.

The browser tests register through agents' clients on the stack's worker, each in a trace of its own; the
layout and the filter parsing are also tested alone (no stack).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from urllib.request import url2pathname

import httpx
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.support.ui import Select

from buffer import SyncStorageClient
from console.lineage_svg import BOX_W, MAX_DRAWN, columns_of, layout
from console.pages.artifacts import BadFilter, parse_labels, parse_time, version_chain
from contracts import (
    ArtifactManifest,
    ArtifactStatus,
    EdgeKind,
    GetLineageOutput,
    HiddenNode,
    LineageEdge,
    RegisterArtifactOutput,
)
from tests.support.browser import Browser
from tests.support.console_stack import ConsoleStack

pytestmark = pytest.mark.timeout(180)


def _trace(what: str) -> str:
    return f"t-{what}-{uuid.uuid4().hex[:12]}"


def _agent(what: str) -> str:
    return f"agent.{what}-{uuid.uuid4().hex[:8]}"


def _upload(client: SyncStorageClient, data: bytes, trace: str, **fields: Any) -> ArtifactManifest:
    fields.setdefault("artifact_type", "report")
    registered = client.upload_artifact(data, trace_id=trace, **fields)
    assert isinstance(registered, RegisterArtifactOutput), registered
    return registered.manifest


def _made_of(*inputs: ArtifactManifest) -> dict[str, Any]:
    return {"input_artifacts": [m.id for m in inputs]}


def _listed(page: Browser) -> list[str]:
    page.find("#artifact-filters")
    return page.attrs("#artifacts tr[data-artifact]", "data-artifact")


def _apply(page: Browser, expect_in_address: str) -> list[str]:
    page.click("#apply")
    page.wait(lambda: expect_in_address in page.path, f"the filtered address with {expect_in_address!r}")
    return _listed(page)


def _ids(*manifests: ArtifactManifest) -> set[str]:
    return {m.id for m in manifests}


def _no_alert(page: Browser) -> None:
    try:
        alert = page.driver.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    raise AssertionError(f"a script ran on the page: alert({text!r})")


# --- the listing ------------------------------------------------------------------------------------------


def test_the_filters_narrow_the_listing(page: Browser, stack: ConsoleStack) -> None:
    """Each form field maps onto list_artifacts: trace, type, creator, step, labels, latest only, the time range
    and the status each leave exactly the artifacts a user would expect, newest first."""
    trace, alice, bob = _trace("filters"), _agent("alice"), _agent("bob")
    with stack.client(alice) as client:
        eu_report = {"name": "Q3 report", "risk_level": "high", "region": "eu"}
        report = _upload(client, b"q3 report", trace, step_id="s1", labels=eu_report)
        chart = _upload(
            client,
            b"q3 chart",
            trace,
            artifact_type="chart",
            step_id="s2",
            labels={"name": "Q3 chart", "risk_level": "low"},
        )
        elsewhere = _upload(client, b"other trace", _trace("other"))
    with stack.client(bob) as client:
        bobs = _upload(
            client,
            b"bob's report",
            trace,
            step_id="s1",
            labels={"name": "US report", "risk_level": "high", "region": "us"},
        )
    with stack.client(alice) as client:
        report_v2 = _upload(client, b"q3 report v2", trace, labels=eu_report, supersedes=report.id, version=2)

    page.open("/artifacts")
    page.fill("#f-trace", trace)
    assert _apply(page, "trace_id=") == [report_v2.id, bobs.id, chart.id, report.id]  # newest first
    assert elsewhere.id not in _listed(page)
    row = page.find(f'#artifacts tr[data-artifact="{report_v2.id}"]')
    assert "v2" in row.text and alice in row.text and "report" in row.text and "completed" in row.text
    assert page.texts("#artifacts td.name") == ["Q3 report", "US report", "Q3 chart", "Q3 report"]
    page.screenshot("artifacts")

    page.fill("#f-type", "report")
    assert set(_apply(page, "artifact_type=report")) == _ids(report, bobs, report_v2)
    page.fill("#f-creator", alice)
    assert set(_apply(page, "created_by=")) == _ids(report, report_v2)
    page.fill("#f-type", "")
    page.fill("#f-creator", "")
    page.fill("#f-step", "s1")
    assert set(_apply(page, "step_id=s1")) == _ids(report, bobs)
    page.fill("#f-step", "")
    page.fill("#f-labels", "risk_level=high, region=eu")
    assert set(_apply(page, "label=risk_level")) == _ids(report, report_v2)
    assert page.find("#f-labels").get_attribute("value") == "risk_level=high, region=eu"
    page.fill("#f-labels", "")
    page.click("#f-latest")
    assert set(_apply(page, "latest_only=1")) == _ids(chart, bobs, report_v2)
    assert page.find("#f-latest").is_selected()
    page.click("#f-latest")
    page.fill("#f-after", chart.created_at.isoformat())
    page.fill("#f-before", report_v2.created_at.isoformat())
    assert _apply(page, "created_before=") == [bobs.id]  # both bounds exclusive

    # status: a file's bytes changed behind the worker's back, found by the scrubber
    Path(url2pathname(urlsplit(chart.uri).path)).write_bytes(b"Q3 CHART")
    with stack.client(alice, user_id=True) as admin:
        admin.cleanup(scopes=["verify_checksums"])
        assert admin.get_artifact(chart.id).manifest.status == ArtifactStatus.FAILED
    page.open("/artifacts?" + urlencode({"trace_id": trace}))
    Select(page.find("#f-status")).select_by_value("failed")
    assert _apply(page, "status=failed") == [chart.id]
    assert "failed" in page.find(f'#artifacts tr[data-artifact="{chart.id}"] .badge').text


def test_paging_follows_the_cursor_with_the_filters_kept(page: Browser, stack: ConsoleStack) -> None:
    trace = _trace("paging")
    with stack.client(_agent("pager")) as client:
        made = [_upload(client, f"page item {i}".encode(), trace).id for i in range(5)]
    with stack.client(_agent("pager")) as client:
        _upload(client, b"another trace", _trace("not-paged"))
    small = Browser(page.driver, stack.start_console(STORAGE_CONSOLE_PAGE_SIZE="2"), page.shots)
    small.open("/artifacts?" + urlencode({"trace_id": trace}))
    seen: list[str] = []
    for _ in range(5):
        listed = _listed(small)
        assert 1 <= len(listed) <= 2
        seen += listed
        if not small.has("#next-page"):
            break
        following = small.find("#next-page").get_attribute("href") or ""
        assert f"trace_id={trace}" in following and "cursor=" in following
        small.click("#next-page")
        small.wait(lambda seen_last=listed[-1]: seen_last not in _listed(small), "the next page")
        assert small.has("#first-page")
    assert seen == list(reversed(made)), "every artifact of the trace once, newest first"


def test_bad_filters_are_a_precise_400_not_a_traceback(stack: ConsoleStack) -> None:
    refusals = {
        "created_after=yesterday": "created_after: 'yesterday' is not a date and time",
        "created_after=2026-12-05&created_before=2026-12-04": "created_after must be earlier than created_before",
        "label=risk_level": "label 'risk_level' is not key=value",
        "label=" + "k" * 70 + "=v": "label key",
        "status=lost": "status: 'lost' is not one of uploading, completed, failed",
        "cursor=not-a-cursor": "cursor",
        "search=ab": "search must be at least 3 characters",
    }
    with httpx.Client(base_url=stack.base_url) as http:
        for query, message in refusals.items():
            answer = http.get(f"/artifacts?{query}")
            assert answer.status_code == 400, (query, answer.text[:300])
            assert 'id="filter-problem"' in answer.text and message in answer.text.replace("&#39;", "'"), query
            assert "Traceback" not in answer.text and 'id="artifact-filters"' in answer.text
        for path, status in {
            "/artifacts/not-an-id": 400,
            f"/artifacts/art_{uuid.uuid4()}": 404,
            f"/artifacts/art_{uuid.uuid4()}?depth=11": 400,
            f"/artifacts/art_{uuid.uuid4()}?direction=sideways": 400,
        }.items():
            answer = http.get(path)
            assert answer.status_code == status and 'id="error-message"' in answer.text, (path, answer.text[:300])


# --- one artifact -----------------------------------------------------------------------------------------


def test_the_detail_page_shows_the_manifest_and_a_working_download_link(page: Browser, stack: ConsoleStack) -> None:
    trace, data = _trace("detail"), b"the uploaded bytes \xe2\x9c\x93"
    with stack.client(_agent("detail")) as client:
        made = _upload(
            client, data, trace, filename="summary.txt", labels={"name": "Q3 summary", "region": "eu"}, step_id="s9"
        )
    page.open("/artifacts?" + urlencode({"trace_id": trace}))
    page.click(f'#artifacts tr[data-artifact="{made.id}"] a')
    page.wait(lambda: page.path == f"/artifacts/{made.id}", "the artifact's page")
    assert page.find("#artifact-name").text == "Q3 summary"
    manifest = page.find("#manifest").text
    assert made.id in manifest and made.checksum in manifest and '"region": "eu"' in manifest
    assert "region=eu" in page.find("#artifact-labels").text
    href = page.find("#download").get_attribute("href") or ""
    assert href.startswith("file://")
    assert Path(url2pathname(urlsplit(href).path)).read_bytes() == data
    assert page.has("#no-versions")
    with httpx.Client(base_url=stack.base_url) as http:
        timing = http.get(f"/artifacts/{made.id}").headers["server-timing"]
    assert float(timing.removeprefix("app;dur=")) < 2000


def test_the_lineage_graph_leads_upstream_and_downstream(page: Browser, stack: ConsoleStack) -> None:
    """A → B → C: B's page draws A left of it and C right of it; clicking C's node opens C. v1 ← v2: v2's page
    lists both versions."""
    trace = _trace("lineage")
    with stack.client(_agent("lineage")) as client:
        a = _upload(client, b"A", trace, artifact_type="dataset", labels={"name": "A"})
        b = _upload(client, b"B", trace, labels={"name": "B"}, ai_context=_made_of(a))
        c = _upload(client, b"C", trace, artifact_type="chart", labels={"name": "C"}, ai_context=_made_of(b))
        v2 = _upload(client, b"A again", trace, artifact_type="dataset", supersedes=a.id, version=2)
    page.open(f"/artifacts/{b.id}")
    focus = page.find(f'svg#lineage g.node.focus[data-artifact="{b.id}"]')
    upstream = page.find(f'svg#lineage a g.node[data-artifact="{a.id}"]')
    downstream = page.find(f'svg#lineage a g.node[data-artifact="{c.id}"]')
    assert upstream.location["x"] < focus.location["x"] < downstream.location["x"]
    assert "A" in upstream.text and "dataset" in upstream.text and "v1" in upstream.text
    assert page.has(f'svg#lineage path.edge.input[data-from="{a.id}"][data-to="{b.id}"]')
    assert page.has(f'svg#lineage path.edge.input[data-from="{b.id}"][data-to="{c.id}"]')

    page.click(f'svg#lineage g.node[data-artifact="{c.id}"]')
    page.wait(lambda: page.path == f"/artifacts/{c.id}", "C's page after a click on its node")
    assert page.has(f'svg#lineage g.node.focus[data-artifact="{c.id}"]')

    page.open(f"/artifacts/{v2.id}")
    assert page.attrs("#versions li[data-artifact]", "data-artifact") == [a.id, v2.id]
    assert page.find(f'#versions li[data-artifact="{a.id}"] a').get_attribute("href").endswith(f"/artifacts/{a.id}")
    assert page.has(f'svg#lineage path.edge.supersedes[data-from="{a.id}"][data-to="{v2.id}"]')
    page.find("#depth")
    Select(page.find("#direction")).select_by_value("downstream")
    page.click("#lineage-form button")
    page.wait(lambda: "direction=downstream" in page.path, "the lineage drawn downstream only")
    assert page.attrs("svg#lineage g.node", "data-artifact") == [v2.id]


def test_the_lineage_screenshot(page: Browser, stack: ConsoleStack) -> None:
    """A risk report with its sources two steps up and what was made from it: the README's picture."""
    trace = _trace("risk")
    with stack.client("agent.collector") as collector:
        raw = _upload(collector, b"raw,prices", trace, artifact_type="dataset", labels={"name": "raw-prices.csv"})
        prices = _upload(
            collector,
            b"prices",
            trace,
            artifact_type="dataset",
            labels={"name": "prices-clean.parquet"},
            ai_context=_made_of(raw),
        )
        customers = _upload(
            collector, b"customers", trace, artifact_type="dataset", labels={"name": "customers.parquet"}
        )
    with stack.client("agent.analyst") as analyst:
        features = _upload(
            analyst,
            b"features",
            trace,
            artifact_type="features",
            labels={"name": "risk-features"},
            ai_context=_made_of(prices, customers),
        )
        report = _upload(
            analyst,
            b"report",
            trace,
            labels={"name": "Q3 risk report", "risk_level": "high"},
            ai_context={**_made_of(features), "model_name": "gpt-4o", "prompt_version": "v7"},
        )
        _upload(
            analyst,
            b"chart",
            trace,
            artifact_type="chart",
            labels={"name": "exposure by region"},
            ai_context=_made_of(report),
        )
        _upload(
            analyst,
            b"summary",
            trace,
            artifact_type="summary",
            labels={"name": "board summary (EN)"},
            ai_context=_made_of(report),
        )
        _upload(
            analyst,
            b"report v2",
            trace,
            labels={"name": "Q3 risk report", "risk_level": "high"},
            supersedes=report.id,
            version=2,
            ai_context=_made_of(features),
        )
    page.open(f"/artifacts/{report.id}")
    assert len(page.find_all("svg#lineage g.node")) == 8
    assert len(page.find_all("svg#lineage path.edge")) == 7  # not v2's input: neither walk from the report takes it
    page.screenshot("lineage")


# --- what the console may not read, and hostile names ----------------------------------------------------


def test_a_private_input_is_a_hidden_node_for_a_reader_and_whole_for_the_admin(
    page: Browser, reader_page: Browser, stack: ConsoleStack
) -> None:
    secret_name = f"secret-plan-{uuid.uuid4().hex[:6]}"
    with stack.client(_agent("owner")) as owner:
        private = _upload(owner, b"private", _trace("private"), visibility="private", labels={"name": secret_name})
    with stack.client(_agent("publisher")) as publisher:
        public = _upload(
            publisher,
            b"public",
            _trace("public"),
            visibility="public",
            labels={"name": "open report"},
            ai_context=_made_of(private),
        )

    reader_page.open(f"/artifacts/{public.id}")
    hidden = reader_page.find(f'svg#lineage g.node.hidden[data-artifact="{private.id}"]')
    assert hidden.text == "hidden"
    assert not reader_page.has(f'svg#lineage a g[data-artifact="{private.id}"]'), "a hidden node is no link"
    assert reader_page.driver.execute_script("return arguments[0].closest('a')", hidden) is None
    assert secret_name not in reader_page.driver.page_source
    assert reader_page.has(f'svg#lineage path.edge.input[data-from="{private.id}"][data-to="{public.id}"]')

    reader_page.open(f"/artifacts/{private.id}")
    assert reader_page.find("#error-message").text
    assert secret_name not in reader_page.driver.page_source
    with httpx.Client(base_url=reader_page.base_url) as http:
        refused = http.get(f"/artifacts/{private.id}")  # the worker's PERMISSION_DENIED: its id and visibility only
        assert refused.status_code == 403 and "private" in refused.text and secret_name not in refused.text
        listed = http.get("/artifacts?" + urlencode({"created_by": private.created_by}))
        assert private.id not in listed.text and secret_name not in listed.text

    page.open(f"/artifacts/{public.id}")
    whole = page.find(f'svg#lineage a g.node[data-artifact="{private.id}"]')
    assert secret_name in whole.text and "hidden" not in (whole.get_attribute("class") or "")


def test_a_hostile_name_is_shown_as_text(page: Browser, stack: ConsoleStack) -> None:
    hostile, trace = "<script>alert(1)</script>", _trace("xss") + "\"'><img src=x onerror=alert(2)>"
    with stack.client(_agent("mallory")) as mallory:
        made = _upload(mallory, b"x", trace, labels={"name": hostile, "note": "<b>bold</b>"})
        derived = _upload(mallory, b"y", trace, labels={"name": hostile + "2"}, ai_context=_made_of(made))

    page.open("/artifacts?" + urlencode({"trace_id": trace}))
    assert page.find(f'#artifacts tr[data-artifact="{made.id}"] td.name').text == hostile
    _no_alert(page)
    assert page.find("#f-trace").get_attribute("value") == trace
    page.open(f"/artifacts/{derived.id}")
    assert page.find("#artifact-name").text == hostile + "2"
    assert hostile in page.find(f'svg#lineage g.node[data-artifact="{made.id}"]').text
    assert page.texts("#artifact-title")[0].startswith(hostile + "2")
    _no_alert(page)
    assert not page.find_all("main script") and not page.find_all("main img")


# --- the layout and the filter parsing alone --------------------------------------------------------------


def _manifest(name: str, **fields: Any) -> ArtifactManifest:
    base: dict[str, Any] = {
        "id": f"art_{uuid.uuid4()}",
        "trace_id": "t",
        "created_by": "agent",
        "artifact_type": "report",
        "uri": "file:///x",
        "size_bytes": 1,
        "checksum": "sha256:" + "0" * 64,
        "labels": {"name": name},
    }
    return ArtifactManifest.model_validate({**base, **fields})


def _edge(
    source: ArtifactManifest | HiddenNode, target: ArtifactManifest | HiddenNode, kind: str = "input"
) -> LineageEdge:
    return LineageEdge.model_validate({"from": source.id, "to": target.id, "kind": kind})


def test_layout_puts_inputs_left_and_derived_right() -> None:
    a, b, focus, d = _manifest("a"), _manifest("b"), _manifest("focus"), _manifest("d")
    secret = HiddenNode(id=f"art_{uuid.uuid4()}")
    v2 = _manifest("focus", version=2)
    edges = [_edge(a, b), _edge(b, focus), _edge(secret, focus), _edge(focus, d), _edge(focus, v2, EdgeKind.SUPERSEDES)]
    drawing = layout([focus, b, secret, d, v2, a], edges, focus.id)
    boxes = {box.id: box for box in drawing.boxes}
    assert [boxes[n.id].column for n in (a, b, secret, focus, d, v2)] == [-2, -1, -1, 0, 1, 1]
    assert boxes[a.id].x < boxes[b.id].x == boxes[secret.id].x < boxes[focus.id].x < boxes[d.id].x == boxes[v2.id].x
    assert boxes[focus.id].focus and not boxes[a.id].focus
    assert (boxes[secret.id].hidden, boxes[secret.id].title, boxes[secret.id].tooltip) == (True, "hidden", "")
    assert boxes[d.id].title == "d" and "report" in boxes[d.id].subtitle and "v1" in boxes[d.id].subtitle
    assert [w.kind for w in drawing.wires] == ["input", "input", "input", "input", "supersedes"]
    assert all(w.path.startswith("M") for w in drawing.wires)
    xs = [box.x for box in drawing.boxes]
    assert min(xs) >= 0 and max(xs) + BOX_W <= drawing.width
    assert not drawing.truncated


def test_layout_bounds_a_huge_graph_and_wraps_tall_columns() -> None:
    focus = _manifest("focus")
    inputs = [_manifest(f"in {i}") for i in range(MAX_DRAWN + 50)]
    drawing = layout([focus, *inputs], [_edge(i, focus) for i in inputs], focus.id)
    assert drawing.truncated and len(drawing.boxes) == MAX_DRAWN
    assert len(drawing.wires) == MAX_DRAWN - 1
    assert drawing.height < 1000, "a column of 199 inputs wraps into lanes instead of growing 14,000 px tall"


def test_columns_of_a_node_neither_walk_reaches() -> None:
    assert columns_of(["f", "x", "y"], [("x", "y")], "f") == {"f": 0, "x": 1, "y": 1}
    assert columns_of(["f", "a", "x"], [("a", "f"), ("x", "a")], "f") == {"f": 0, "a": -1, "x": -2}


def test_the_version_chain_goes_as_far_as_the_lineage_reaches() -> None:
    """v1 ← v2 ← v3 ← v4 with v4 unreadable, seen from v3 at depth 1: v2, v3 and the hidden v4 in order, and a
    link to the older v1 the reply did not reach."""
    v1 = _manifest("r")
    v2 = _manifest("r", version=2, supersedes=v1.id)
    v3 = _manifest("r", version=3, supersedes=v2.id)
    v4 = HiddenNode(id=f"art_{uuid.uuid4()}")
    edges = [_edge(v2, v3, EdgeKind.SUPERSEDES), _edge(v3, v4, EdgeKind.SUPERSEDES)]
    lineage = GetLineageOutput(artifact_id=v3.id, nodes=[v3, v2, v4], edges=edges)
    versions, older = version_chain(v3, lineage)
    assert [(v.id, v.manifest is not None, v.here) for v in versions] == [
        (v2.id, True, False),
        (v3.id, True, True),
        (v4.id, False, False),
    ]
    assert older == v1.id
    alone, before = version_chain(v2, None)  # no lineage: the manifest's own supersedes still links back
    assert [v.id for v in alone] == [v2.id] and before == v1.id


def test_labels_and_times_are_parsed_or_refused_precisely() -> None:
    assert parse_labels(["risk_level=high, region=eu", "inn:7707083893", ""]) == {
        "risk_level": "high",
        "region": "eu",
        "inn": "7707083893",
    }
    assert parse_labels(["formula=a=b"]) == {"formula": "a=b"}
    for bad, message in {
        "nothing": "label 'nothing' is not key=value",
        "=v": "is not key=value",
        "a=1, a=2": "given twice",
        "k=" + "v" * 300: "at most 256",
    }.items():
        with pytest.raises(BadFilter, match=message):
            parse_labels([bad])
    with pytest.raises(BadFilter, match="at most 32 label filters"):
        parse_labels([",".join(f"k{i}=v" for i in range(33))])
    assert parse_time("created_after", "2026-12-04T10:15") == datetime.fromisoformat("2026-12-04T10:15:00+00:00")
    assert parse_time("x", "2026-12-04T12:15:00+02:00") == datetime.fromisoformat("2026-12-04T10:15:00+00:00")
    assert parse_time("x", None) is None
    with pytest.raises(BadFilter, match="created_before: '2026-13-01' is not a date and time"):
        parse_time("created_before", "2026-13-01")
