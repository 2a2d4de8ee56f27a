"""``/artifacts``: find artifacts by the filters ``list_artifacts`` has; ``/artifacts/<id>``: one artifact's
manifest, download link, versions and lineage graph.

Every question goes to the worker as the console's broker user: what that user may not read is never listed,
opening it answers as an unknown id would (nothing about it shows), and in a graph it is a grey box, unnamed and
unlinked. The listing costs one ``list_artifacts``; the detail page asks its three questions at once.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.lineage_svg import MAX_DRAWN, artifact_name, layout
from console.web import arg, bus_of, link, render, settings_of
from contracts import (
    ArtifactManifest,
    ArtifactStatus,
    EdgeKind,
    GetArtifactUriOutput,
    GetLineageOutput,
    HiddenNode,
    InvalidArgument,
    LineageDirection,
    ListArtifactsOutput,
    StorageError,
)
from contracts.lineage import MAX_LINEAGE_DEPTH
from contracts.manifest import ARTIFACT_ID_PATTERN, MAX_LABELS

MAX_FIELD = 256
"""A text filter's length: trace, step and creator are at most 255 characters in a manifest (one more is kept
so that an overlong value is refused by the worker's words instead of cut into another, valid filter)."""
MAX_LABEL_FIELD = 4096
MAX_LABEL_KEY, MAX_LABEL_VALUE = 64, 256
MAX_CURSOR = 1024
MAX_SEARCH = 129
DEFAULT_DEPTH = 3
TIME_EXAMPLE = "2026-12-04T10:15 or 2026-12-04T10:15:00Z"
TEXT_FILTERS = ("trace_id", "artifact_type", "created_by", "step_id", "search")
"""Form fields that go to ``list_artifacts`` under their own names."""
_ARTIFACT_ID = re.compile(ARTIFACT_ID_PATTERN)


class BadFilter(Exception):
    """A filter the page cannot send; its message names the field and what is wrong (a 400 page)."""


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "\u2026")


def parse_labels(values: list[str]) -> dict[str, str]:
    """``label`` fields, each ``key=value`` pairs separated by commas (``risk_level=high, region=eu``);
    ``key:value`` is read too. A value holding a comma cannot be given here (search finds it)."""
    found: dict[str, str] = {}
    for part in (piece.strip() for value in values for piece in value.split(",")):
        if not part:
            continue
        separator = "=" if "=" in part else ":"
        key, sep, value = part.partition(separator)
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise BadFilter(f"label {_shown(part)} is not key=value (e.g. risk_level=high, region=eu)")
        if len(key) > MAX_LABEL_KEY:
            raise BadFilter(f"label key {_shown(key)} is {len(key)} characters, at most {MAX_LABEL_KEY}")
        if len(value) > MAX_LABEL_VALUE:
            raise BadFilter(f"label {key!r} has a value of {len(value)} characters, at most {MAX_LABEL_VALUE}")
        if found.get(key, value) != value:
            raise BadFilter(f"label {key!r} is given twice with different values")
        found[key] = value
        if len(found) > MAX_LABELS:
            raise BadFilter(f"at most {MAX_LABELS} label filters")
    return found


def parse_time(name: str, text: str | None) -> datetime | None:
    """An ISO date and time (UTC when no offset is given), or ``BadFilter`` naming the field."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter(f"{name}: {_shown(text)} is not a date and time (e.g. {TIME_EXAMPLE})") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def time_field(moment: datetime | None) -> str | None:
    """A time as the form shows it and the links carry it: UTC, ISO, no offset, no needless zeros."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="auto")


@dataclass
class Filters:
    """The listing's filters as the form has them (strings), and as ``list_artifacts`` takes them."""

    form: dict[str, Any]
    params: dict[str, Any]

    def link(self, **extra: Any) -> str:
        return link("/artifacts", **self.form, **extra)


def read_filters(request: Request) -> tuple[Filters, str | None]:
    """The filters of the address, and what is wrong with them (None when they can be sent)."""
    form: dict[str, Any] = {name: arg(request, name, max_length=MAX_FIELD) for name in TEXT_FILTERS}
    form["search"] = arg(request, "search", max_length=MAX_SEARCH)
    form["status"] = arg(request, "status", max_length=32)
    form["latest_only"] = "1" if arg(request, "latest_only", max_length=8) else None
    params: dict[str, Any] = {name: form[name] for name in (*TEXT_FILTERS, "status")}
    params["latest_only"] = form["latest_only"] is not None
    raw_labels = [value[:MAX_LABEL_FIELD] for value in request.query_params.getlist("label")]
    form["label"] = [value for value in raw_labels if value.strip()]
    for name in ("created_after", "created_before"):
        form[name] = arg(request, name, max_length=64)
    filters = Filters(form, params)
    try:
        if form["status"] is not None and form["status"] not in set(ArtifactStatus):
            raise BadFilter(f"status: {_shown(form['status'])} is not one of {', '.join(ArtifactStatus)}")
        labels = parse_labels(raw_labels)
        form["label"] = [f"{key}={value}" for key, value in labels.items()]
        params["labels"] = labels or None
        for name in ("created_after", "created_before"):
            params[name] = parse_time(name, form[name])
            form[name] = time_field(params[name])
        after, before = params["created_after"], params["created_before"]
        if after is not None and before is not None and after >= before:
            raise BadFilter("created_after must be earlier than created_before (both bounds are exclusive)")
    except BadFilter as exc:
        return filters, str(exc)
    return filters, None


def _row(manifest: ArtifactManifest) -> dict[str, Any]:
    return {"m": manifest, "name": artifact_name(manifest)}


async def artifacts_page(request: Request) -> Response:
    settings = settings_of(request)
    cursor = arg(request, "cursor", max_length=MAX_CURSOR)
    listing: ListArtifactsOutput | None = None
    filters, problem = read_filters(request)
    if problem is None:
        try:
            listing = await bus_of(request).storage.list_artifacts(
                **filters.params, limit=settings.page_size, cursor=cursor
            )
        except InvalidArgument as exc:  # a damaged cursor, a search too short: the client's or worker's words
            problem = exc.message
    next_cursor = listing.next_cursor if listing else None
    return render(
        request,
        "artifacts.html",
        status_code=400 if problem else 200,
        problem=problem,
        form=filters.form,
        labels=", ".join(filters.form.get("label") or []),
        statuses=list(ArtifactStatus),
        rows=[_row(m) for m in (listing.artifacts if listing else [])],
        first_page=filters.link() if cursor else None,
        next_page=filters.link(cursor=next_cursor) if next_cursor else None,
        filtered=any(filters.form.get(name) for name in filters.form),
    )


# --- one artifact -----------------------------------------------------------------------------------------


def _depth(request: Request) -> int:
    text = arg(request, "depth", max_length=8)
    if text is None:
        return DEFAULT_DEPTH
    if not text.isdigit() or not 1 <= int(text) <= MAX_LINEAGE_DEPTH:
        raise InvalidArgument(f"depth must be a whole number from 1 to {MAX_LINEAGE_DEPTH}, got {_shown(text)}")
    return int(text)


def _direction(request: Request) -> LineageDirection:
    text = arg(request, "direction", max_length=16) or LineageDirection.BOTH.value
    if text not in set(LineageDirection):
        raise InvalidArgument(f"direction must be one of {', '.join(LineageDirection)}, got {_shown(text)}")
    return LineageDirection(text)


@dataclass(frozen=True, slots=True)
class Version:
    """One link of the version chain; ``manifest`` None when the console may not read it."""

    id: str
    manifest: ArtifactManifest | None
    here: bool


def version_chain(focus: ArtifactManifest, lineage: GetLineageOutput | None) -> tuple[list[Version], str | None]:
    """Oldest to newest around ``focus``, as far as the lineage reply reaches along ``supersedes`` edges (the
    manifest's own ``supersedes`` always), and the id of an older version beyond it, if there is one."""
    nodes: dict[str, ArtifactManifest | HiddenNode] = {n.id: n for n in lineage.nodes} if lineage else {}
    nodes[focus.id] = focus
    previous: dict[str, str] = {}
    following: dict[str, str] = {}
    for edge in lineage.edges if lineage else []:
        if edge.kind == EdgeKind.SUPERSEDES:
            previous.setdefault(edge.to, edge.from_)
            following.setdefault(edge.from_, edge.to)

    def before(artifact_id: str) -> str | None:
        node = nodes.get(artifact_id)
        return previous.get(artifact_id) or (node.supersedes if isinstance(node, ArtifactManifest) else None)

    chain = [focus.id]
    while (older := before(chain[0])) and older in nodes and older not in chain:
        chain.insert(0, older)
    while (newer := following.get(chain[-1])) and newer not in chain:
        chain.append(newer)
    versions = [Version(i, _readable(nodes[i]), i == focus.id) for i in chain]
    return versions, before(chain[0])


def _readable(node: ArtifactManifest | HiddenNode) -> ArtifactManifest | None:
    return node if isinstance(node, ArtifactManifest) else None


async def _answer(call: Any) -> Any:
    """The call's result, or the StorageError it raised (a part of the page that failed shows why)."""
    try:
        return await call
    except StorageError as exc:
        return exc


async def artifact_page(request: Request) -> Response:
    artifact_id = request.path_params["artifact_id"]
    if not _ARTIFACT_ID.fullmatch(artifact_id):
        raise InvalidArgument("not an artifact id (art_ followed by a UUID)")
    depth, direction = _depth(request), _direction(request)
    storage = bus_of(request).storage
    got, uri, lineage = await asyncio.gather(
        storage.get_artifact(artifact_id),
        _answer(storage.get_artifact_uri(artifact_id)),
        _answer(storage.get_lineage(artifact_id, direction=direction, depth=depth)),
    )
    manifest = got.manifest
    graph = lineage if isinstance(lineage, GetLineageOutput) else None
    versions, older = version_chain(manifest, graph)
    here = f"/artifacts/{artifact_id}"
    return render(
        request,
        "artifact.html",
        m=manifest,
        name=artifact_name(manifest),
        details=got.details,
        wire=manifest.wire(),
        uri=uri if isinstance(uri, GetArtifactUriOutput) else None,
        uri_problem=uri if isinstance(uri, StorageError) else None,
        drawing=layout(graph.nodes, graph.edges, artifact_id) if graph else None,
        lineage=graph,
        lineage_problem=lineage if isinstance(lineage, StorageError) else None,
        max_drawn=MAX_DRAWN,
        depth=depth,
        depths=range(1, MAX_LINEAGE_DEPTH + 1),
        direction=direction.value,
        directions=[d.value for d in LineageDirection],
        here=here,
        node_query=link(
            "",
            depth=depth if depth != DEFAULT_DEPTH else None,
            direction=direction.value if direction != LineageDirection.BOTH else None,
        ),
        versions=versions,
        older=older,
        filter_trace=link("/artifacts", trace_id=manifest.trace_id),
    )


routes: list[BaseRoute] = [Route("/artifacts", artifacts_page), Route("/artifacts/{artifact_id}", artifact_page)]
