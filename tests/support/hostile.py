"""Hypothesis strategies for hostile input: what a buggy or malicious agent could put on the bus.

A case is a ``Delivery`` (body bytes and the AMQP properties the pipeline reads) built from one of:
raw bytes, arbitrary JSON, an envelope with fields dropped or of the wrong type, or a well-formed command
for a real action whose params are a mix of plausible and hostile values (wrong types, huge and deeply
nested JSON, unicode edge cases, NaN and Infinity, numbers beyond a double or a 64-bit int, times that
overflow once converted to UTC or lie in the future, forged cursors, path tricks in URIs, SQL and LIKE
metacharacters).
``register_artifact`` commands may ask for a real staged file (``Case.stage``) so hostile trace ids and
labels reach the commit and the file move, not only validation.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from contracts import ACTIONS, COMMAND_TYPE
from service.core.pipeline import Delivery

METACHARS = "%_\\'\";-*?[]^$.()/|&<>{}!#~`"
TRICKY_STRINGS = [
    "",
    " ",
    "%",
    "_",
    "%%",
    "_%",
    "a%",
    "%a",
    "a_c",
    "\\",
    "\\%",
    "\\_",
    "'",
    "''",
    "' OR '1'='1",
    "'; DROP TABLE artifacts; --",
    '"',
    "*",
    "?",
    "[a-z]",
    "^$",
    ".*",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "\ufeff",
    "\u202e",
    "\u200b",
    "e\u0301",
    "\u00e9",
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "\U0010ffff",
    "\r\n",
    "\t",
    "ǅ",
    "İ",
    "ß",
    "Σ",
    "A",
    "a",
    "..",
    "../",
    "../../etc/passwd",
    "/",
    "%2e%2e%2f",
    "x" * 300,
]
OUTSIDE_FILE = "outside.txt"
"""Created beside (not under) the storage root: a path trick that reached it would be an escape."""


def tricky_text(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(TRICKY_STRINGS),
        st.text(alphabet=METACHARS + "aA0 é中", max_size=max_size),
        st.text(max_size=max_size),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=max_size),
    )


RAW_NUMBERS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1E+400",
    "1e0400",
    "2.5e308",
    "1" + "0" * 400 + ".5",
    "1e-400",
    "1" + "0" * 400,
    "-0",
    "1E2",
]
"""Number tokens written as is (``raw_number``): overflowing doubles, underflow, huge integers, NaN words."""
_RAW = re.compile(r'"@@raw:([^"@]*)@@"')


def raw_number(token: str) -> str:
    """A placeholder ``_dumps`` replaces with ``token`` unquoted: JSON numbers ``json.dumps`` never writes."""
    return f"@@raw:{token}@@"


def numbers() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 2**64, 10**100, 10**400]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 1.7976931348623157e308]),
        st.sampled_from(RAW_NUMBERS).map(raw_number),
    )


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), numbers(), tricky_text())
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5), st.dictionaries(tricky_text(12), children, max_size=5)
        ),
        max_leaves=max_leaves,
    )


@dataclass(frozen=True)
class Paths:
    """The places the strategies aim path tricks at (absolute, resolved)."""

    root: str
    outside: str

    def uris(self) -> st.SearchStrategy[str]:
        temp, arts = f"{self.root}/temp", f"{self.root}/artifacts"
        fixed = [
            f"file://{self.outside}",
            f"file://{temp}/../../{OUTSIDE_FILE}",
            f"file://{temp}/%2e%2e/%2e%2e/{OUTSIDE_FILE}",
            f"file://{temp}/%2E%2E%2F%2E%2E%2F{OUTSIDE_FILE}",
            f"file://{temp}/..%2f..%2f{OUTSIDE_FILE}",
            f"file://{temp}/%252e%252e/{OUTSIDE_FILE}",
            f"file://{temp}/escape-link.bin",
            f"file://{temp}/escape-dir/{OUTSIDE_FILE}",
            f"file://{temp}/inside-link.bin",
            f"file://{temp}/a\x00b.bin",
            f"file://{temp}/a%00b.bin",
            f"file://{temp}/",
            f"file://{temp}",
            f"file://{arts}/",
            f"file://evil.example{temp}/x.bin",
            f"file://localhost{temp}/missing.bin",
            f"FILE://{temp}/missing.bin",
            f"file:{temp}/missing.bin",
            f"{temp}/missing.bin",
            "temp/../../outside.txt",
            "temp/missing.bin",
            "/etc/passwd",
            "file:///etc/passwd",
            "file:///proc/self/environ",
            "s3://bucket/temp/x.bin",
            "http://127.0.0.1/x",
            "data:text/plain,hello",
            "\\\\server\\share\\x",
            f"file://{temp}/" + "a" * 2000,
            f"file://{temp}/{'é' * 40}.bin",
        ]
        return st.one_of(
            st.sampled_from(fixed),
            st.builds(lambda s: f"file://{temp}/{s}", tricky_text()),
            st.builds(lambda s: f"file://{arts}/{s}", tricky_text()),
            tricky_text(),
        )


@dataclass
class Case:
    delivery: Delivery
    kind: str
    action: str | None = None
    stage: bytes | None = None
    """For register_artifact: stage a file with these bytes and point the manifest at it."""
    corrupt: dict[str, Any] = field(default_factory=dict)
    """Manifest fields to overwrite after staging (a wrong size or checksum)."""
    valid: bool = False
    """Params built to pass validation: the command reaches its handler and the SQL."""


OVERFLOWING_TIMES = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00+23:59",
    "0001-01-01T00:59:59.999999+01:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59.999999-00:01",
    "9999-12-31T23:59:59+14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59.999999",
]
"""Times at (and past) the ends of what a datetime holds, once an offset is applied."""
FUTURE_SECONDS = [-(10**8), -86_400, -60, 0, 30, 240, 360, 3_600, 10**8]
"""Offsets from now (seconds) of envelope times: well inside or well outside the 5 minutes of allowed skew."""


def offset_datetimes() -> st.SearchStrategy[str]:
    """Any datetime at any UTC offset (±23:59): converting some of them to UTC overflows."""
    offsets = st.integers(-1439, 1439).map(lambda minutes: timezone(timedelta(minutes=minutes)))
    return st.builds(lambda moment, zone: moment.replace(tzinfo=zone).isoformat(), st.datetimes(), offsets)


def around_now() -> st.SearchStrategy[str]:
    """Times from long ago to years ahead, with a random offset: future ones beyond skew must be refused."""
    zones = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])
    return st.builds(
        lambda seconds, zone: (datetime.now(UTC) + timedelta(seconds=seconds)).astimezone(zone).isoformat(),
        st.sampled_from(FUTURE_SECONDS),
        zones,
    )


def _datetimes() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
        st.datetimes().map(lambda d: d.isoformat()),
        offset_datetimes(),
        around_now(),
        st.sampled_from(OVERFLOWING_TIMES),
        st.sampled_from(["0000-00-00T00:00:00Z", "2024-02-30", "now", "", "T", "2024-01-01T00:00:00+24:00"]),
        numbers(),
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursors() -> st.SearchStrategy[Any]:
    """Forged cursors: the worker's shape ([time, id] or {"before": seq}, base64url JSON) with hostile insides,
    broken base64 and padding, other JSON, and plain hostile text."""
    inside = st.one_of(
        st.tuples(_datetimes(), st.one_of(tricky_text(), numbers(), st.none())).map(list),
        st.fixed_dictionaries({"before": st.one_of(numbers(), tricky_text(), st.none())}),
        json_values(4),
    )
    encoded = inside.map(lambda value: _b64(json.dumps(value, allow_nan=True).encode()))
    return st.one_of(
        encoded,
        encoded,
        encoded.map(lambda token: token + "=="),
        encoded.map(lambda token: token[: len(token) // 2]),
        st.binary(max_size=60).map(_b64),
        st.binary(max_size=60).map(lambda b: b.hex()),
        st.just(_b64(b"[" * 700)),
        tricky_text(),
        json_values(2),
    )


def _labels() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.dictionaries(tricky_text(20), tricky_text(20), max_size=4),
        st.dictionaries(st.text(max_size=3), st.text(max_size=3), min_size=33, max_size=40),
        json_values(),
    )


def _ids() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.uuids().map(lambda u: f"art_{u}"),
        st.just("art_00000000-0000-0000-0000-000000000000"),
        st.uuids().map(lambda u: f"ART_{u}"),
        tricky_text(),
        json_values(4),
    )


def _manifest(paths: Paths) -> st.SearchStrategy[dict[str, Any]]:
    """A manifest with zero to three fields hostile (or dropped): most reach the handler's own checks."""
    hostile: dict[str, st.SearchStrategy[Any]] = {
        "id": _ids(),
        "version": numbers(),
        "supersedes": _ids(),
        "trace_id": tricky_text(),
        "step_id": tricky_text(),
        "created_by": tricky_text(),
        "created_at": _datetimes(),
        "artifact_type": tricky_text(),
        "content_type": tricky_text(),
        "uri": paths.uris(),
        "size_bytes": numbers(),
        "checksum": st.one_of(tricky_text(), st.just("sha256:" + "A" * 64)),
        "status": st.one_of(st.sampled_from(["uploading", "completed", "failed", "COMPLETED"]), tricky_text()),
        "retention": st.one_of(
            st.sampled_from(["infinite", "30d", "12h", "P30D", "0d", "-1d", "P99999999999Y", "1e400d", "PT"]),
            tricky_text(),
        ),
        "owner": tricky_text(),
        "visibility": st.one_of(st.sampled_from(["trace", "private", "public"]), tricky_text()),
        "context": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "model_params": st.fixed_dictionaries({}, optional={"temperature": numbers()}),
                    "input_artifacts": st.lists(_ids(), max_size=3),
                    "execution_time_ms": numbers(),
                },
            ),
            json_values(),
        ),
        "labels": _labels(),
        "extra_field": json_values(3),
    }

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "id": f"art_{draw(st.uuids())}",
            "trace_id": draw(st.sampled_from(["trace-fuzz", "trace-seed"])),
            "created_by": "agent-fuzz",
            "artifact_type": "report",
            "content_type": "text/plain",
            "uri": f"file://{paths.root}/temp/missing.bin",
            "size_bytes": 1,
            "checksum": "sha256:" + "0" * 64,
        }
        for name in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=3, unique=True)):
            if draw(st.integers(0, 5)) == 0:
                manifest.pop(name, None)
            else:
                manifest[name] = draw(hostile[name])
        return manifest

    return build()


def _messages() -> st.SearchStrategy[Any]:
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool", "tool", "root"]), "content": json_values(6)},
        optional={"id": st.one_of(st.uuids().map(str), tricky_text()), "metadata": json_values(4)},
    )
    return st.one_of(st.lists(message, max_size=4), st.lists(message, max_size=4), json_values(4))


def _namespace() -> st.SearchStrategy[Any]:
    part = st.one_of(st.sampled_from(["fuzz", "agent.7"]), tricky_text())
    return st.one_of(st.lists(part, min_size=1, max_size=3), st.lists(part, max_size=9), json_values(4))


PLAUSIBLE: dict[str, Any] = {
    "artifact_id": _ids,
    "labels": _labels,
    "metadata": _labels,
    "trace_id": tricky_text,
    "created_by": tricky_text,
    "step_id": tricky_text,
    "artifact_type": tricky_text,
    "thread_id": lambda: st.one_of(st.just("fuzz-thread"), tricky_text()),
    "key": lambda: st.one_of(st.just("k"), tricky_text()),
    "created_after": _datetimes,
    "created_before": _datetimes,
    "cursor": cursors,
    "limit": lambda: st.one_of(st.integers(1, 5), numbers()),
    "max_depth": numbers,
    "expires_in_seconds": numbers,
    "ttl_seconds": numbers,
    "expected_version": numbers,
    "max_messages": numbers,
    "namespace": _namespace,
    "namespace_prefix": _namespace,
    "prefix": _namespace,
    "value": lambda: st.one_of(st.dictionaries(tricky_text(), json_values(), max_size=4), json_values()),
    "messages": _messages,
    "scopes": lambda: st.one_of(st.lists(tricky_text(), max_size=3), json_values(3)),
    "dry_run": lambda: st.just(True),
}


@functools.cache
def _params(action: str, paths: Paths) -> st.SearchStrategy[dict[str, Any]]:
    """Required fields mostly present and plausible; optional ones sometimes; now and then a stray one."""
    spec = ACTIONS.get(action)
    if spec is None:
        return st.dictionaries(tricky_text(12), json_values(), max_size=4)
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, info in spec.params.model_fields.items():
        if name == "manifest":
            value = st.one_of(_manifest(paths), _manifest(paths), _manifest(paths), json_values(4))
        elif (plausible := PLAUSIBLE.get(name)) is not None:
            value = st.one_of(plausible(), plausible(), json_values(4))
        else:
            value = json_values(4)
        (required if info.is_required() else optional)[name] = value
    fields = st.fixed_dictionaries(required, optional=optional)
    anything = {**required, **optional, "unexpected_param": json_values(3)}
    return st.one_of(fields, fields, fields, fields, st.fixed_dictionaries({}, optional=anything))


FUZZ_ARTIFACTS = [f"art_00000000-0000-4000-8000-{i:012x}" for i in range(1, 5)]
"""Artifacts the harness registers up front, so reads, deletes and successors find something."""


def valid_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Text that passes validation yet carries the hard parts: metacharacters, unicode edge cases."""
    usable = [t for t in TRICKY_STRINGS if t and len(t) <= max_size and _encodable(t)]
    return st.one_of(
        st.sampled_from(usable),
        st.text(alphabet=METACHARS + "aA0 é中\x00", min_size=1, max_size=max_size),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=max_size),
    )


@functools.cache
def _valid_params(action: str, paths: Paths) -> st.SearchStrategy[dict[str, Any]]:
    """Params the action's model accepts, built from hard values: these reach the handlers and the SQL."""
    text = valid_text()
    ids = st.one_of(st.sampled_from(FUZZ_ARTIFACTS), st.uuids().map(lambda u: f"art_{u}"))
    labels = st.dictionaries(valid_text(20), valid_text(20), max_size=3)
    page = {"limit": st.integers(1, 5), "cursor": st.one_of(st.none(), text)}
    when = st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
    namespace = st.lists(st.one_of(st.just("fuzz"), valid_text(20)), min_size=1, max_size=3)
    message = st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "user", "assistant", "tool"]),
            "content": st.one_of(text, st.dictionaries(text, text, max_size=2), st.lists(text, max_size=2)),
        },
        optional={"metadata": st.dictionaries(text, text, max_size=2), "created_at": when},
    )
    thread = st.one_of(st.just("fuzz-thread"), text)
    by_action: dict[str, st.SearchStrategy[dict[str, Any]]] = {
        "ping": st.just({}),
        "get_stats": st.just({}),
        "register_artifact": st.fixed_dictionaries(
            {
                "manifest": st.fixed_dictionaries(
                    {
                        "id": st.uuids().map(lambda u: f"art_{u}"),
                        "trace_id": st.one_of(st.just("trace-fuzz"), text),
                        "created_by": text,
                        "artifact_type": valid_text(50),
                        "uri": st.just("STAGED"),
                        "size_bytes": st.just(0),
                        "checksum": st.just("sha256:" + "0" * 64),
                    },
                    optional={
                        "labels": labels,
                        "step_id": text,
                        "owner": text,
                        "visibility": st.sampled_from(["trace", "private", "public"]),
                        "retention": st.sampled_from(["infinite", "30d", "12h", "P30D", "1d"]),
                        "supersedes": st.sampled_from(FUZZ_ARTIFACTS),
                        "version": st.integers(1, 3),
                        "content_type": text,
                    },
                )
            }
        ),
        "get_artifact": st.fixed_dictionaries({"artifact_id": ids}, optional={"latest": st.booleans()}),
        "get_artifact_uri": st.fixed_dictionaries(
            {"artifact_id": ids}, optional={"expires_in_seconds": st.integers(1, 99)}
        ),
        "delete_artifact": st.fixed_dictionaries({"artifact_id": ids}),
        "restore_artifact": st.fixed_dictionaries({"artifact_id": ids}),
        "list_artifacts": st.fixed_dictionaries(
            {},
            optional={
                "trace_id": text,
                "artifact_type": text,
                "created_by": text,
                "step_id": text,
                "status": st.sampled_from(["uploading", "completed", "failed"]),
                "labels": labels,
                "created_after": when,
                "created_before": when,
                "latest_only": st.booleans(),
                **page,
            },
        ),
        "save_thread": st.fixed_dictionaries(
            {"thread_id": thread},
            optional={
                "messages": st.lists(message, max_size=4),
                "metadata": st.dictionaries(valid_text(20), st.one_of(text, st.integers(), st.booleans()), max_size=3),
                "max_messages": st.integers(1, 5),
                "ttl_seconds": st.integers(1, 10**6),
                "clear": st.booleans(),
            },
        ),
        "get_thread": st.fixed_dictionaries(
            {"thread_id": thread}, optional={"limit": st.integers(1, 5), "include_deleted": st.booleans()}
        ),
        "list_threads": st.fixed_dictionaries(
            {},
            optional={
                "metadata": st.dictionaries(valid_text(20), st.one_of(text, st.integers(), st.booleans()), max_size=2),
                "created_after": when,
                **page,
            },
        ),
        "delete_thread": st.fixed_dictionaries({"thread_id": thread}),
        "put_memory": st.fixed_dictionaries(
            {
                "namespace": namespace,
                "key": st.one_of(st.just("k"), text),
                "value": st.dictionaries(text, text, max_size=3),
            },
            optional={
                "labels": labels,
                "ttl_seconds": st.integers(1, 10**6),
                "visibility": st.sampled_from(["private", "public", "trace"]),
            },
        ),
        "get_memory": st.fixed_dictionaries({"namespace": namespace, "key": st.one_of(st.just("k"), text)}),
        "search_memory": st.fixed_dictionaries({}, optional={"namespace_prefix": namespace, "labels": labels, **page}),
        "list_namespaces": st.fixed_dictionaries({}, optional={"prefix": namespace, "max_depth": st.integers(1, 8)}),
        "delete_memory": st.fixed_dictionaries({"namespace": namespace, "key": st.one_of(st.just("k"), text)}),
        "cleanup": st.fixed_dictionaries({"dry_run": st.booleans()}),
    }
    return by_action.get(action, st.just({}))


def _deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@functools.cache
def _properties() -> st.SearchStrategy[dict[str, Any]]:
    """AMQP properties as a broker hands them over: short strings are valid UTF-8 (no lone surrogates)."""
    amqp_text = st.one_of(st.sampled_from([t for t in TRICKY_STRINGS if _encodable(t)]), st.text(max_size=40))
    return st.fixed_dictionaries(
        {},
        optional={
            "reply_to": st.one_of(st.none(), st.just("replies"), st.just("replies")),
            "correlation_id": st.one_of(st.none(), amqp_text),
            "user_id": st.one_of(st.none(), st.just("admin-agent"), amqp_text),
            "expiration_ms": st.one_of(st.none(), numbers()),
        },
    )


def _encodable(text: str) -> bool:
    """UTF-8 holds every code point but a lone surrogate."""
    return not any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def _delivery(body: bytes, props: dict[str, Any]) -> Delivery:
    props = {"reply_to": "replies", **props}
    expiration = props.get("expiration_ms")
    if expiration is not None and not isinstance(expiration, float | int):
        expiration = None
    return Delivery(
        body=body,
        reply_to=props["reply_to"],
        correlation_id=props.get("correlation_id"),
        user_id=props.get("user_id"),
        expiration_ms=float(expiration) if expiration is not None and abs(expiration) < 1e300 else None,
    )


def _dumps(value: Any) -> bytes:
    """JSON as a sloppy sender would write it: NaN and Infinity included, lone surrogates escaped, and the
    ``raw_number`` placeholders written as the bare number tokens they stand for."""
    return _RAW.sub(lambda found: found.group(1), json.dumps(value, allow_nan=True)).encode()


@st.composite
def cases(draw: st.DrawFn, paths: Paths) -> Case:
    kind = draw(spread(["bytes", "json", "deep", "huge", "envelope", *["command"] * 10]))
    props = draw(_properties())
    if kind == "bytes":
        return Case(_delivery(draw(st.binary(max_size=200)), props), kind)
    if kind == "json":
        return Case(_delivery(_dumps(draw(json_values(20))), props), kind)
    if kind == "deep":
        depth = draw(st.sampled_from([64, 200, 1000, 5000, 100_000]))
        inner = _deep(depth, draw(st.sampled_from(["list", "dict"])))
        where = draw(st.sampled_from(["body", "params", "context"]))
        if where == "body":
            body = inner
        else:
            field_name = "params" if where == "params" else "context"
            body = json.dumps(
                {
                    "specversion": "1.0",
                    "type": COMMAND_TYPE,
                    "source": "fuzz",
                    "id": str(draw(st.uuids())),
                    "data": {"action": "save_thread", field_name: "__DEEP__"},
                }
            ).replace('"__DEEP__"', '{"x":' + inner + "}")
        return Case(_delivery(body.encode(), props), kind)
    if kind == "huge":
        size = draw(st.sampled_from([1024 * 1024 - 200, 1024 * 1024 + 1, 2 * 1024 * 1024]))
        params = {"namespace": ["n"], "key": "k", "value": {"blob": "x" * size}}
        envelope = {
            "specversion": "1.0",
            "type": COMMAND_TYPE,
            "source": "fuzz",
            "id": str(draw(st.uuids())),
            "data": {"action": "put_memory", "params": params},
        }
        return Case(_delivery(json.dumps(envelope).encode(), props), kind)
    action = draw(_actions())
    valid = kind == "command" and action in ACTIONS and draw(spread([True, False]))
    params = draw(_valid_params(action, paths) if valid else _params(action if action in ACTIONS else "", paths))
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "type": COMMAND_TYPE,
        "source": draw(st.one_of(st.just("agent-fuzz"), valid_text() if valid else tricky_text())),
        "id": draw(st.uuids().map(str) if valid else _envelope_ids()),
        "data": {"action": action, "params": params},
    }
    envelope.update(draw(_plain_extras() if valid else _envelope_extras()))
    envelope["data"].update(draw(_data_extras()))
    if valid:
        props.pop("expiration_ms", None)
    stage = None
    corrupt: dict[str, Any] = {}
    if kind == "envelope":
        for key in draw(st.lists(st.sampled_from(["specversion", "type", "source", "id", "data"]), max_size=2)):
            if draw(st.booleans()):
                envelope.pop(key, None)
            else:
                envelope[key] = draw(json_values(4))
    elif action == "register_artifact" and isinstance(params.get("manifest"), dict) and (valid or draw(st.booleans())):
        stage = draw(st.binary(min_size=0, max_size=64))
        corrupt = draw(_corruptions(paths))
    return Case(_delivery(_dumps(envelope), props), kind, action, stage, corrupt, valid)


REUSED_IDS = [str(uuid.UUID(int=i)) for i in range(1, 9)]
"""A few envelope ids and idempotency keys come back across cases: replays and key reuse, hostile style."""


def spread(options: list[Any]) -> st.SearchStrategy[Any]:
    """Pick among ``options`` about evenly (``sampled_from`` leans hard on the first ones)."""
    return st.integers(0, 2**24).map(lambda i: options[(i * 2654435761 >> 7) % len(options)])


@functools.cache
def _actions() -> st.SearchStrategy[str]:
    known = sorted(ACTIONS)
    weighted = [*known, *known, *known, "register_artifact", "register_artifact", "list_artifacts", "save_thread"]
    return spread([*weighted, "", "x" * 101, "no_such_action", "ping\x00", "get_artifact "]).flatmap(
        lambda a: tricky_text() if a == "" else st.just(a)
    )


@functools.cache
def _envelope_ids() -> st.SearchStrategy[Any]:
    fresh = st.uuids().map(str)
    return st.one_of(fresh, fresh, fresh, st.sampled_from(REUSED_IDS), tricky_text(), st.just("i" * 256))


@functools.cache
def _envelope_extras() -> st.SearchStrategy[dict[str, Any]]:
    hostile = st.fixed_dictionaries(
        {},
        optional={
            "time": st.one_of(st.just(datetime.now(UTC).isoformat()), _datetimes()),
            "subject": tricky_text(),
            "traceparent": st.one_of(
                st.just("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), tricky_text(), json_values(2)
            ),
            "correlationid": tricky_text(),
            "priority": numbers(),
            "datacontenttype": tricky_text(),
        },
    )
    return st.one_of(_plain_extras(), _plain_extras(), _plain_extras(), hostile)


@functools.cache
def _plain_extras() -> st.SearchStrategy[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return st.fixed_dictionaries({}, optional={"time": st.just(now), "subject": valid_text()})


@functools.cache
def _data_extras() -> st.SearchStrategy[dict[str, Any]]:
    admin = st.fixed_dictionaries({"requester_id": st.just("admin-agent")})
    context = st.fixed_dictionaries(
        {},
        optional={
            "requester_id": st.one_of(st.just("admin-agent"), tricky_text(), json_values(3)),
            "requester_trace_id": st.one_of(st.just("trace-fuzz"), st.just("trace-seed"), tricky_text()),
            "target_node": st.one_of(st.just("storage-primary"), tricky_text()),
        },
    )
    rare = st.one_of(st.none(), json_values(3))
    hostile = st.fixed_dictionaries(
        {"context": st.one_of(admin, context, json_values(4))},
        optional={
            "idempotency_key": st.one_of(st.sampled_from(REUSED_IDS), tricky_text(), rare),
            "timeout_seconds": st.one_of(st.integers(1, 60), numbers(), rare),
            "target_node": st.one_of(st.just("storage-primary"), tricky_text(), rare),
            "retry_policy": rare,
            "requirements": rare,
        },
    )
    plain = st.fixed_dictionaries(
        {"context": st.one_of(admin, admin, context)},
        optional={"idempotency_key": st.uuids().map(str), "timeout_seconds": st.integers(1, 60)},
    )
    return st.one_of(plain, plain, plain, hostile)


@functools.cache
def _corruptions(paths: Paths) -> st.SearchStrategy[dict[str, Any]]:
    damage = st.fixed_dictionaries(
        {}, optional={"size_bytes": numbers(), "checksum": tricky_text(), "uri": paths.uris()}
    )
    return st.one_of(st.just({}), st.just({}), damage)


def stage_into(case: Case, root: str) -> Case:
    """Write the case's file under ``temp/`` and point its manifest at it (then apply the corruptions)."""
    import hashlib
    from pathlib import Path

    if case.stage is None:
        return case
    envelope = json.loads(case.delivery.body)
    manifest = envelope["data"]["params"]["manifest"]
    path = Path(root) / "temp" / f"{uuid.uuid4().hex}.bin"
    path.write_bytes(case.stage)
    manifest.update(
        uri=path.as_uri(),
        size_bytes=len(case.stage),
        checksum="sha256:" + hashlib.sha256(case.stage).hexdigest(),
        id=f"art_{uuid.uuid4()}",
    )
    manifest.update(case.corrupt)
    body = _dumps(envelope)
    d = case.delivery
    delivery = Delivery(body, d.reply_to, d.correlation_id, d.user_id, d.expiration_ms)
    return Case(delivery, case.kind, case.action, valid=case.valid)
