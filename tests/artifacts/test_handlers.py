"""Handlers called directly (no broker): the artifact actions, ping and get_stats on SQLite and a temp root."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import (
    AlreadyExists,
    DeleteArtifactOutput,
    DeleteArtifactParams,
    FailedPrecondition,
    GetArtifactParams,
    GetArtifactUriParams,
    GetStatsParams,
    InvalidArgument,
    ListArtifactsParams,
    NotFound,
    OutOfRange,
    PermissionDenied,
    PingParams,
    RegisterArtifactOutput,
    RegisterArtifactParams,
)
from service import __version__
from service.core.context import HandlerContext
from service.core.recording import Committed
from service.handlers import artifact_tombstones, artifacts
from service.handlers.artifacts import get_artifact, get_artifact_uri, list_artifacts
from service.handlers.system import get_stats, ping
from tests.support.artifacts import checksum, manifest_for, new_artifact_id
from tests.support.services import UNIT_MAX_FILE_BYTES, MakeContext


async def register_artifact(params: RegisterArtifactParams, ctx: HandlerContext) -> RegisterArtifactOutput:
    """The handler's output, as an agent reads it in the reply."""
    result = await artifacts.register_artifact(params, ctx)
    return result.output if isinstance(result, Committed) else result


async def delete_artifact(params: DeleteArtifactParams, ctx: HandlerContext) -> DeleteArtifactOutput:
    return (await artifact_tombstones.delete_artifact(params, ctx)).output


T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def register(ctx: HandlerContext, root: Path, data: bytes = b"data", **fields: Any) -> RegisterArtifactOutput:
    manifest = manifest_for(root, data, **fields)
    return await register_artifact(RegisterArtifactParams.model_validate({"manifest": manifest}), ctx)


def local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


async def test_register_moves_the_file_and_commits_completed(make_ctx: MakeContext, storage_root: Path) -> None:
    """register_artifact returns the permanent URI, forces completed and defaults the owner to the requester."""
    manifest = manifest_for(storage_root, b"hello", status="uploading", trace_id="t/../x", filename="a.json")
    out = await register_artifact(RegisterArtifactParams.model_validate({"manifest": manifest}), make_ctx("alice"))
    assert out.registered and not out.already_exists
    assert out.manifest.status == "completed" and out.manifest.owner == "alice"
    final = local(out.uri)
    assert final.parent.parent == storage_root / "artifacts"
    assert final.name == f"{manifest['id']}.json"
    assert final.read_bytes() == b"hello"
    assert not local(manifest["uri"]).exists()


async def test_register_checks_in_order(make_ctx: MakeContext, storage_root: Path) -> None:
    """Confinement, existence, size cap, size and checksum each raise their own typed error."""
    ctx = make_ctx()
    outside = storage_root.parent / "outside.bin"
    outside.write_bytes(b"x")
    cases: list[tuple[dict[str, Any], type[Exception]]] = [
        (manifest_for(storage_root, b"x", uri=outside.as_uri()), PermissionDenied),
        (manifest_for(storage_root, b"x", uri=(storage_root / "temp" / "gone.bin").as_uri()), NotFound),
        (manifest_for(storage_root, b"y" * (UNIT_MAX_FILE_BYTES + 1), size_bytes=1), OutOfRange),
        (manifest_for(storage_root, b"abc", size_bytes=2), InvalidArgument),
        (manifest_for(storage_root, b"abc", checksum=checksum(b"abd")), InvalidArgument),
    ]
    for manifest, expected in cases:
        with pytest.raises(expected) as raised:
            await register_artifact(RegisterArtifactParams.model_validate({"manifest": manifest}), ctx)
        assert not raised.value.retryable
    size_error, checksum_error = cases[3][0], cases[4][0]
    assert local(size_error["uri"]).exists()
    assert local(checksum_error["uri"]).exists(), "a refused registration never deletes the temp file"


async def test_checksum_mismatch_details(make_ctx: MakeContext, storage_root: Path) -> None:
    """The checksum refusal names the field and the claimed sum, never the file's."""
    manifest = manifest_for(storage_root, b"abc", checksum=checksum(b"abd"))
    with pytest.raises(InvalidArgument) as raised:
        await register_artifact(RegisterArtifactParams.model_validate({"manifest": manifest}), make_ctx())
    assert raised.value.details == {"field": "manifest.checksum", "expected": checksum(b"abd")}


async def test_existing_id_answers_by_checksum_only(make_ctx: MakeContext, storage_root: Path) -> None:
    """An existing id with the same checksum is registered=false; with another checksum ALREADY_EXISTS."""
    ctx = make_ctx()
    manifest = manifest_for(storage_root, b"one")
    first = await register_artifact(RegisterArtifactParams.model_validate({"manifest": manifest}), ctx)
    again = await register_artifact(RegisterArtifactParams.model_validate({"manifest": manifest}), ctx)
    assert (again.registered, again.already_exists, again.uri) == (False, True, first.uri)
    other = {**manifest_for(storage_root, b"two"), "id": manifest["id"]}
    with pytest.raises(AlreadyExists):
        await register_artifact(RegisterArtifactParams.model_validate({"manifest": other}), ctx)


async def test_supersedes_rules(make_ctx: MakeContext, storage_root: Path) -> None:
    """An unknown predecessor is NOT_FOUND, a wrong version FAILED_PRECONDITION; a fork names the existing successor."""
    ctx = make_ctx()
    v1 = await register(ctx, storage_root, b"v1")
    with pytest.raises(NotFound):
        await register(ctx, storage_root, b"u", supersedes=new_artifact_id(), version=2)
    with pytest.raises(FailedPrecondition):
        await register(ctx, storage_root, b"w", supersedes=v1.artifact_id, version=3)
    v2 = await register(ctx, storage_root, b"v2", supersedes=v1.artifact_id, version=2)
    with pytest.raises(AlreadyExists) as fork:
        await register(ctx, storage_root, b"f", supersedes=v1.artifact_id, version=2)
    assert fork.value.details["existing_successor"] == v2.artifact_id
    latest = await get_artifact(GetArtifactParams(artifact_id=v1.artifact_id, latest=True), ctx)
    assert latest.artifact_id == v2.artifact_id


async def test_get_applies_visibility(make_ctx: MakeContext, storage_root: Path) -> None:
    """A private artifact reads for its owner and an admin, and is refused to others without naming the owner."""
    out = await register(make_ctx("alice"), storage_root, visibility="private")
    params = GetArtifactParams(artifact_id=out.artifact_id)
    assert (await get_artifact(params, make_ctx("alice"))).manifest.owner == "alice"
    assert (await get_artifact(params, make_ctx("admin-agent"))).artifact_id == out.artifact_id
    with pytest.raises(PermissionDenied) as refused:
        await get_artifact(params, make_ctx("bob", trace="trace-1"))
    assert refused.value.details == {
        "artifact": out.artifact_id,
        "visibility": "private",
        "requester": "bob",
    }
    with pytest.raises(NotFound):
        await get_artifact(GetArtifactParams(artifact_id=new_artifact_id()), make_ctx("alice"))


async def test_list_filters_and_pages(make_ctx: MakeContext, storage_root: Path) -> None:
    """list_artifacts filters by trace, label and time and pages newest first without repeats."""
    ctx = make_ctx()
    made = []
    for i in range(7):
        fields = {"trace_id": f"t{i % 2}", "labels": {"n": str(i % 3)}, "created_at": T0 + timedelta(minutes=i)}
        made.append(await register(ctx, storage_root, str(i).encode(), visibility="public", **fields))
    newest_first = [o.artifact_id for o in reversed(made)]

    async def ids(**params: Any) -> list[str]:
        page = await list_artifacts(ListArtifactsParams.model_validate(params), ctx)
        assert page.count == len(page.artifacts)
        return [m.id for m in page.artifacts]

    assert await ids(trace_id="t0") == newest_first[0::2]
    assert await ids(labels={"n": "0"}) == [made[6].artifact_id, made[3].artifact_id, made[0].artifact_id]
    assert await ids(created_after=T0 + timedelta(minutes=4.5)) == newest_first[:2]
    seen: list[str] = []
    cursor = None
    while True:
        page = await list_artifacts(ListArtifactsParams(limit=3, cursor=cursor), ctx)
        seen += [m.id for m in page.artifacts]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == newest_first


async def test_uri_and_delete(make_ctx: MakeContext, storage_root: Path) -> None:
    """get_artifact_uri gives the unsigned file URI; delete moves the file to orphans/ and keeps a tombstone
    (NOT_FOUND, reason deleted); a second delete changes nothing."""
    ctx = make_ctx("admin-agent")
    out = await register(ctx, storage_root, b"bye", visibility="public")
    uri = await get_artifact_uri(GetArtifactUriParams(artifact_id=out.artifact_id), ctx)
    assert (uri.uri, uri.signed, uri.expires_at) == (out.uri, False, None)
    deleted = await delete_artifact(DeleteArtifactParams(artifact_id=out.artifact_id), ctx)
    assert deleted.deleted is True
    assert not local(out.uri).exists()
    assert (storage_root / "orphans" / local(out.uri).relative_to(storage_root)).read_bytes() == b"bye"
    assert (await delete_artifact(DeleteArtifactParams(artifact_id=out.artifact_id), ctx)).deleted is False
    with pytest.raises(NotFound) as gone:
        await get_artifact_uri(GetArtifactUriParams(artifact_id=out.artifact_id), ctx)
    assert gone.value.details == {"artifact_id": out.artifact_id, "reason": "deleted"}


async def test_ping_and_stats(make_ctx: MakeContext, storage_root: Path) -> None:
    """ping names node and version; get_stats counts artifacts by status and type, and files."""
    ctx = make_ctx()
    pong = await ping(PingParams(), ctx)
    assert (pong.node, pong.version) == ("storage-primary", __version__) and pong.uptime_seconds >= 0
    await register(ctx, storage_root, b"1", artifact_type="report")
    await register(ctx, storage_root, b"2", artifact_type="log")
    stats = await get_stats(GetStatsParams(), ctx)
    assert stats.artifacts.total == 2
    assert stats.artifacts.by_status == {"completed": 2}
    assert stats.artifacts.by_type == {"report": 1, "log": 1}
    assert stats.files == 2
    assert stats.inbox == 0, "handlers called without the pipeline record nothing in the inbox"
