"""Hostile input, without a broker: thousands of generated messages through ``Pipeline.process``.

Every message with a ``reply_to`` must get a reply that parses as the contract's RESULT or ERROR envelope
(strict JSON: no NaN), never an exception and never ``INTERNAL`` (the pipeline's name for an exception it
caught) or ``UNAVAILABLE`` (the database is healthy here: a retryable answer to bad input would make an
agent retry it forever). Only what is not a command is rejected to the dead-letter queue: a body over the
size limit, not RFC 8259 JSON (NaN, Infinity, a number no double holds), not a valid COMMAND envelope (a
missing id, specversion or type; a time UTC cannot hold or over 5 minutes ahead). After the run the
worker still answers ``ping``. No path trick
registers a file outside the root, and the data seeded before the run is unchanged after it.
Filters must match literally: ``%`` and ``_`` in a label, a metadata value or a namespace match only
themselves.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import ResultEnvelope
from service.core.pipeline import Settle
from tests.support.fuzz_harness import FORBIDDEN_CODES, FuzzHarness, is_command, parse_reply
from tests.support.hostile import Case, cases, stage_into
from tests.support.requirements import require_postgres
from tests.support.tally import Tally

pytestmark = pytest.mark.faults

EXAMPLES = int(os.environ.get("STORAGE_FUZZ_EXAMPLES", "2500"))
PG_EXAMPLES = int(os.environ.get("STORAGE_FUZZ_PG_EXAMPLES", "800"))
"""PostgreSQL refuses what SQLite stores (a NUL in text, in JSON): the same properties must hold there."""
FILTER_EXAMPLES = int(os.environ.get("STORAGE_FUZZ_FILTER_EXAMPLES", "120"))
RELAXED = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def check_case(harness: FuzzHarness, case: Case, kinds: Counter[str]) -> None:
    """The properties every hostile message must keep (an assertion error is a found bug)."""
    delivery = case.delivery
    outcome = harness.process(delivery)
    command = is_command(delivery.body, harness.settings.max_message_bytes)
    assert outcome.settle is (Settle.ACK if command else Settle.REJECT), "only non-commands are dead-lettered"
    if not delivery.reply_to:
        assert outcome.body is None
        return
    assert outcome.body is not None, "a command with reply_to got no reply"
    reply = parse_reply(outcome.body)
    if isinstance(reply, ResultEnvelope):
        kinds[f"{case.action} RESULT"] += 1
        if case.action == "register_artifact" and "uri" in reply.data.output:  # (not a replayed reply)
            stored = Path(reply.data.output["uri"].removeprefix("file://"))
            assert stored.is_relative_to(harness.root / "artifacts"), f"registered outside artifacts/: {stored}"
            assert stored.is_file() and not stored.is_symlink()
        return
    code = reply.data.error.code.value
    kinds[f"{case.action} {code}"] += 1
    assert code not in FORBIDDEN_CODES, f"{code} for hostile input: {reply.data.error.message}"
    if not command:
        assert code == "INVALID_ARGUMENT"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_hostile_messages_always_get_a_valid_reply(backend: str, tmp_path: Path) -> None:
    """Whatever an agent puts on the bus (garbage, wrong types, huge or deep JSON, NaN, path tricks, SQL
    metacharacters), it gets a well-formed RESULT or ERROR and nothing else in the store changes."""
    if backend == "postgres":
        asyncio.run(require_postgres())
    tally = Tally(f"hostile input (pipeline, {backend})")
    kinds: Counter[str] = Counter()
    examples = EXAMPLES if backend == "sqlite" else PG_EXAMPLES
    with FuzzHarness(tmp_path, backend) as harness:

        @settings(RELAXED, max_examples=examples)
        @given(case=cases(harness.paths))
        def each(case: Case) -> None:
            tally.commands += 1
            check_case(harness, stage_into(case, str(harness.root)), kinds)

        each()
        tally.unexpected += harness.damage()
        if not isinstance(harness.call("ping", {}), ResultEnvelope):
            tally.unexpected.append("ping is no longer answered after the hostile run")
    tally.figures.update(
        results=sum(v for k, v in kinds.items() if k.endswith("RESULT")), outcomes=dict(kinds.most_common(12))
    )
    tally.check()
    assert tally.commands >= min(examples, 500)


LIKE_VALUES = ["%", "_", "%%", "a%", "%a", "a_c", "abc", "aXc", "\\", "\\%", "'", "a'b", "A", "a", "*", "?", "[a]", "é"]
literal_values = st.one_of(st.sampled_from(LIKE_VALUES), st.text(alphabet="%_\\a'*", min_size=1, max_size=4))


def test_filters_match_literally(tmp_path: Path) -> None:
    """A label, metadata value or namespace holding ``%`` or ``_`` finds only items with exactly that
    value, never what a LIKE pattern would match."""
    tally = Tally("literal filters (pipeline)")
    with FuzzHarness(tmp_path) as harness:

        @settings(RELAXED, max_examples=FILTER_EXAMPLES)
        @given(values=st.lists(literal_values, min_size=2, max_size=4, unique=True), probe=literal_values)
        def each(values: list[str], probe: str) -> None:
            tally.commands += 1
            tally.unexpected.extend(check_filters(harness, values, probe))

        each()
    tally.figures["messages"] = harness.processed
    tally.check()


def check_filters(harness: FuzzHarness, values: list[str], probe: str) -> list[str]:
    scope = uuid.uuid4().hex[:12]
    artifacts: dict[str, str] = {}
    for i, value in enumerate(values):
        manifest = {
            **harness.stage(value.encode()),
            "trace_id": f"{scope}{value}",
            "labels": {"scope": scope, "k": value},
        }
        harness.output("register_artifact", {"manifest": manifest})
        artifacts[manifest["id"]] = value
        harness.output(
            "save_thread", {"thread_id": f"{scope}-{i}", "metadata": {"scope": scope, "k": value}, "messages": []}
        )
        harness.output(
            "put_memory",
            {"namespace": [scope, value], "key": "k", "value": {"v": value}, "labels": {"scope": scope, "k": value}},
        )
    want = {v for v in values if v == probe}
    wrong: list[str] = []

    def expect(what: str, got: list[Any], expected: set[Any]) -> None:
        if set(got) != expected or len(got) != len(expected):
            wrong.append(f"{what} probe={probe!r} values={values!r}: got {got!r}, want {sorted(expected)!r}")

    by_label = harness.output("list_artifacts", {"labels": {"scope": scope, "k": probe}})
    expect("list_artifacts labels", [artifacts[m["id"]] for m in by_label["artifacts"]], want)
    by_trace = harness.output("list_artifacts", {"trace_id": f"{scope}{probe}"})
    expect("list_artifacts trace_id", [artifacts.get(m["id"], "?") for m in by_trace["artifacts"]], want)
    threads = harness.output("list_threads", {"metadata": {"scope": scope, "k": probe}})
    expect("list_threads metadata", [t["metadata"]["k"] for t in threads["threads"]], want)
    items = harness.output("search_memory", {"namespace_prefix": [scope, probe]})
    expect("search_memory namespace_prefix", [i["namespace"][1] for i in items["items"]], want)
    labelled = harness.output("search_memory", {"labels": {"scope": scope, "k": probe}})
    expect("search_memory labels", [i["value"]["v"] for i in labelled["items"]], want)
    spaces = harness.output("list_namespaces", {"prefix": [scope]})
    expect("list_namespaces", [tuple(n) for n in spaces["namespaces"]], {(scope, v) for v in values})
    return wrong
