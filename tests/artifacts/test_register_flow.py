"""The register_artifact flow of docs/contract.md §4, check by check and in order, through the wire."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from tests.support.artifacts import checksum, manifest_for, new_artifact_id, write_temp
from tests.support.bus import Bus, error, output
from tests.support.wire import path_of, register
from tests.support.workers import Workers


async def call_register(bus: Bus, manifest: dict[str, Any]) -> dict[str, Any]:
    return await bus.call("register_artifact", {"manifest": manifest})


async def assert_unknown(bus: Bus, artifact_id: str) -> None:
    reply = await bus.call("get_artifact", {"artifact_id": artifact_id})
    assert error(reply)["code"] == "NOT_FOUND", f"{artifact_id} was registered"


# -- 1. path confinement ----------------------------------------------------------------------------------


async def test_uris_outside_temp_are_permission_denied(bus: Bus, storage_root: Path) -> None:
    """Traversal, foreign schemes, outside paths, encoded tricks, NUL, symlinks and artifacts/ are all refused."""
    data = b"secret outside the storage root"
    outside_dir = storage_root.parent / "outside"
    outside_dir.mkdir()
    outside = outside_dir / "secret.bin"
    outside.write_bytes(data)
    temp = storage_root / "temp"
    temp.mkdir(exist_ok=True)
    (temp / "link.bin").symlink_to(outside)
    (temp / "linkdir").symlink_to(outside_dir, target_is_directory=True)
    in_root_elsewhere = storage_root / "orphans" / "kept.bin"
    in_root_elsewhere.parent.mkdir(exist_ok=True)
    in_root_elsewhere.write_bytes(data)
    sibling = storage_root / "temp-evil" / "x.bin"
    sibling.parent.mkdir()
    sibling.write_bytes(data)
    lookalike_root = Path(f"{storage_root}-evil") / "temp" / "x.bin"
    lookalike_root.parent.mkdir(parents=True)
    lookalike_root.write_bytes(data)
    nul_target = temp / "nul.bin"
    nul_target.write_bytes(data)
    (temp / "inside-link.bin").symlink_to(nul_target)
    stored = storage_root / "artifacts" / "trace-1" / "art.bin"
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(data)
    root = storage_root.as_posix()

    uris = {
        "dot-dot in a file URI": f"file://{root}/temp/../../outside/secret.bin",
        "dot-dot in a relative path": "temp/../../outside/secret.bin",
        "http scheme": "http://example.com/secret.bin",
        "https scheme": "https://example.com/secret.bin",
        "s3 scheme": "s3://bucket/temp/secret.bin",
        "ftp scheme": f"ftp://{root}/temp/nul.bin",
        "absolute file URI outside the root": outside.as_uri(),
        "absolute path outside the root": str(outside),
        "file URI naming a host": f"file://evil.example.com{root}/temp/nul.bin",
        "percent-encoded dot-dot": f"file://{root}/temp/%2e%2e/%2E%2E/outside/secret.bin",
        "percent-encoded slashes": f"file://{root}/temp%2F..%2F..%2Foutside%2Fsecret.bin",
        "percent-encoded NUL": f"file://{root}/temp/nul.bin%00.txt",
        "raw NUL": f"file://{root}/temp/nul.bin\x00.txt",
        "symlinked file escaping the root": (temp / "link.bin").as_uri(),
        "symlinked folder escaping the root": f"file://{root}/temp/linkdir/secret.bin",
        "symlink to another temp file": (temp / "inside-link.bin").as_uri(),
        "a stored artifact's file": stored.as_uri(),
        "a stored artifact's file, relative": "artifacts/trace-1/art.bin",
        "inside the root but in orphans/": in_root_elsewhere.as_uri(),
        "a sibling folder named like temp": sibling.as_uri(),
        "a sibling root named like the root": lookalike_root.as_uri(),
        "the root itself": storage_root.as_uri(),
    }
    manifests = {
        label: {**manifest_for(storage_root, data), "id": new_artifact_id(), "uri": uri} for label, uri in uris.items()
    }
    replies = await asyncio.gather(*(call_register(bus, m) for m in manifests.values()))
    for (label, manifest), reply in zip(manifests.items(), replies, strict=True):
        err = error(reply)
        assert err["code"] == "PERMISSION_DENIED", (label, err)
        assert err["retryable"] is False
        assert err["details"]["uri"] == manifest["uri"], label
    for manifest in manifests.values():
        await assert_unknown(bus, manifest["id"])
    assert outside.read_bytes() == data, "a refused registration never touches the file"
    assert in_root_elsewhere.exists() and sibling.exists() and lookalike_root.exists() and nul_target.exists()
    assert stored.read_bytes() == data
    assert [p for p in (storage_root / "artifacts").rglob("*.bin")] == [stored]


async def test_confinement_is_checked_before_existence(bus: Bus, storage_root: Path) -> None:
    """An outside path is PERMISSION_DENIED even when nothing is there: no probing the disk through the worker."""
    manifest = manifest_for(storage_root, b"x", uri=(storage_root.parent / "no-such-file.bin").as_uri())
    assert error(await call_register(bus, manifest))["code"] == "PERMISSION_DENIED"


async def test_a_relative_uri_resolves_against_the_root(bus: Bus, storage_root: Path) -> None:
    """A URI relative to the storage root (``temp/x.bin``) is accepted like the absolute one."""
    data = b"relative"
    write_temp(storage_root, data, "relative.bin")
    manifest = manifest_for(storage_root, data, uri="temp/relative.bin")
    out = output(await call_register(bus, manifest))
    assert path_of(out["uri"]).read_bytes() == data
    assert not (storage_root / "temp" / "relative.bin").exists()


# -- 2. existence, 3. size cap, 4. size, 5. checksum ------------------------------------------------------


async def test_missing_file_is_not_found(bus: Bus, storage_root: Path) -> None:
    """A manifest pointing at a temp file that is not there is NOT_FOUND, whatever else is wrong with it."""
    uri = (storage_root / "temp" / "never-written.bin").as_uri()
    manifest = manifest_for(storage_root, b"x", uri=uri, size_bytes=999, checksum=checksum(b"other"))
    err = error(await call_register(bus, manifest))
    assert err["code"] == "NOT_FOUND" and err["retryable"] is False
    assert err["details"]["uri"] == uri
    await assert_unknown(bus, manifest["id"])


async def test_a_folder_is_not_a_file(bus: Bus, storage_root: Path) -> None:
    """A URI naming a folder under temp/ is refused as INVALID_ARGUMENT rather than hashed or moved."""
    (storage_root / "temp" / "folder.bin").mkdir(parents=True)
    manifest = manifest_for(storage_root, b"x", uri=(storage_root / "temp" / "folder.bin").as_uri())
    assert error(await call_register(bus, manifest))["code"] == "INVALID_ARGUMENT"
    assert (storage_root / "temp" / "folder.bin").is_dir()


async def test_files_over_the_size_cap_are_out_of_range(workers: Workers, storage_root: Path) -> None:
    """With STORAGE_MAX_FILE_BYTES=1024 a 1024-byte file registers and a 1025-byte one is OUT_OF_RANGE."""
    _, bus = await workers.start(max_file_bytes=1024)
    _, at_cap = await register(bus, storage_root, b"a" * 1024)
    assert at_cap["registered"] is True
    over = manifest_for(storage_root, b"b" * 1025)
    err = error(await call_register(bus, over))
    assert err["code"] == "OUT_OF_RANGE" and err["retryable"] is False
    assert err["details"]["limit_bytes"] == 1024
    assert "1025" not in err["message"] and 1025 not in err["details"].values(), "the file's size is not told"
    # The cap is checked on the file itself, before the manifest's own size claim.
    lying = manifest_for(storage_root, b"c" * 2000, size_bytes=10)
    assert error(await call_register(bus, lying))["code"] == "OUT_OF_RANGE"
    await assert_unknown(bus, over["id"])


async def test_default_size_cap_is_ten_mebibytes(bus: Bus, storage_root: Path) -> None:
    """Without configuration a file one byte over 10 MiB is OUT_OF_RANGE (checked before hashing it)."""
    path = storage_root / "temp" / "big.bin"
    path.parent.mkdir(exist_ok=True)
    with path.open("wb") as handle:
        handle.truncate(10 * 1024 * 1024 + 1)  # sparse: no 10 MiB written to disk
    manifest = manifest_for(storage_root, b"x", uri=path.as_uri(), size_bytes=10 * 1024 * 1024 + 1)
    err = error(await call_register(bus, manifest))
    assert err["code"] == "OUT_OF_RANGE"
    assert err["details"]["limit_bytes"] == 10 * 1024 * 1024


async def test_size_mismatch_is_invalid_argument_before_the_checksum(bus: Bus, storage_root: Path) -> None:
    """A wrong size_bytes is INVALID_ARGUMENT naming the field (never the file's size); the checksum step is not
    reached and the temp file stays."""
    manifest = manifest_for(storage_root, b"12345", size_bytes=4, checksum=checksum(b"something else"))
    err = error(await call_register(bus, manifest))
    assert err["code"] == "INVALID_ARGUMENT"
    assert err["details"] == {"field": "manifest.size_bytes", "expected": 4}
    assert path_of(manifest["uri"]).exists(), "a refused registration leaves the temp file where it is"
    await assert_unknown(bus, manifest["id"])


async def test_checksum_mismatch_names_the_claimed_sum_and_keeps_the_temp_file(bus: Bus, storage_root: Path) -> None:
    """A corrupted upload is INVALID_ARGUMENT naming the claimed sum only, and its temp file stays for cleanup."""
    manifest = manifest_for(storage_root, b"corrupted bytes", checksum=checksum(b"original bytes"))
    err = error(await call_register(bus, manifest))
    assert err["code"] == "INVALID_ARGUMENT" and err["retryable"] is False
    assert err["details"] == {"field": "manifest.checksum", "expected": checksum(b"original bytes")}
    assert checksum(b"corrupted bytes") not in json.dumps(err)
    assert path_of(manifest["uri"]).read_bytes() == b"corrupted bytes"
    await assert_unknown(bus, manifest["id"])
    fixed = output(await call_register(bus, {**manifest, "checksum": checksum(b"corrupted bytes")}))
    assert fixed["registered"] is True, "the same upload registers once the manifest is right"


async def test_identical_bytes_under_another_id_are_allowed(bus: Bus, storage_root: Path) -> None:
    """Two uploads of the same bytes register as two artifacts, each with its own file."""
    data = b"shared bytes"
    first_manifest, first = await register(bus, storage_root, data, visibility="public")
    second_manifest, second = await register(bus, storage_root, data, visibility="public", trace_id="trace-2")
    assert second["registered"] is True and second["uri"] != first["uri"]
    assert path_of(first["uri"]).read_bytes() == path_of(second["uri"]).read_bytes() == data
    assert first_manifest["id"] != second_manifest["id"]


# -- existing ids: the answer depends only on the checksum -----------------------------------------------


async def test_same_id_same_checksum_is_success_without_the_file(bus: Bus, storage_root: Path) -> None:
    """Registering an existing id with its checksum answers registered=false, already_exists=true, no file needed."""
    manifest, first = await register(bus, storage_root, b"once")
    assert not path_of(manifest["uri"]).exists()  # the temp file is long gone
    again = output(await call_register(bus, {**manifest, "step_id": "a retry may differ in metadata"}))
    assert again["registered"] is False and again["already_exists"] is True
    assert again["uri"] == first["uri"] and again["checksum"] == manifest["checksum"]
    assert again["manifest"] == first["manifest"], "the stored manifest, not the one just sent"
    assert path_of(first["uri"]).read_bytes() == b"once"


async def test_same_id_other_checksum_is_already_exists(bus: Bus, storage_root: Path) -> None:
    """Reusing an artifact id for different bytes is ALREADY_EXISTS, and the original stays intact."""
    manifest, first = await register(bus, storage_root, b"original")
    impostor = manifest_for(storage_root, b"impostor", id=manifest["id"])
    err = error(await call_register(bus, impostor))
    assert err["code"] == "ALREADY_EXISTS" and err["retryable"] is False
    assert err["details"]["artifact_id"] == manifest["id"]
    assert path_of(first["uri"]).read_bytes() == b"original"
    assert path_of(impostor["uri"]).exists(), "the impostor's temp file is not consumed"


# -- supersedes ---------------------------------------------------------------------------------------------


async def test_supersedes_rules(bus: Bus, storage_root: Path) -> None:
    """A successor must name a known artifact (else NOT_FOUND) with version+1, and a version chain never forks."""
    v1, _ = await register(bus, storage_root, b"v1")

    unknown = manifest_for(storage_root, b"u", supersedes=new_artifact_id(), version=2)
    err = error(await call_register(bus, unknown))
    assert err["code"] == "NOT_FOUND" and err["details"]["supersedes"] == unknown["supersedes"]

    for wrong_version in (1, 3):
        skipping = manifest_for(storage_root, b"s", supersedes=v1["id"], version=wrong_version)
        err = error(await call_register(bus, skipping))
        assert err["code"] == "FAILED_PRECONDITION", wrong_version
        assert err["details"]["expected"] == 2 and err["details"]["actual"] == wrong_version

    v2, _ = await register(bus, storage_root, b"v2", supersedes=v1["id"], version=2)
    fork = manifest_for(storage_root, b"fork", supersedes=v1["id"], version=2)
    err = error(await call_register(bus, fork))
    assert err["code"] == "ALREADY_EXISTS"
    assert err["details"]["existing_successor"] == v2["id"]
    for refused in (unknown, fork):
        await assert_unknown(bus, refused["id"])
    latest = output(await bus.call("get_artifact", {"artifact_id": v1["id"], "latest": True}))
    assert latest["artifact_id"] == v2["id"]


async def test_concurrent_successors_leave_one_winner(bus: Bus, storage_root: Path) -> None:
    """Two successors of one artifact sent at once: exactly one registers, the other names it."""
    v1, _ = await register(bus, storage_root, b"v1")
    rivals = [manifest_for(storage_root, f"rival {i}".encode(), supersedes=v1["id"], version=2) for i in range(4)]
    replies = await asyncio.gather(*(call_register(bus, m) for m in rivals))
    winners = [r for r in replies if r["type"] == "ai.team.result"]
    assert len(winners) == 1
    winner_id = winners[0]["data"]["output"]["artifact_id"]
    for reply in replies:
        if reply is not winners[0]:
            err = error(reply)
            assert err["code"] == "ALREADY_EXISTS" and err["details"]["existing_successor"] == winner_id


# -- where the file lands -------------------------------------------------------------------------------


async def test_trace_ids_never_escape_the_artifacts_folder(bus: Bus, storage_root: Path) -> None:
    """Hostile trace ids become one folder name under artifacts/, and nothing is written outside it."""
    before = set(os.listdir(storage_root.parent))
    hostile = ["../../etc", "..", "/etc/cron.d", "a/b/../../c", "./.", "~root", "C:\\windows", "x" * 255]
    outs = []
    for trace_id in hostile:
        _, out = await register(bus, storage_root, trace_id.encode(), trace_id=trace_id, visibility="public")
        outs.append(out)
    artifacts = (storage_root / "artifacts").resolve()
    for trace_id, out in zip(hostile, outs, strict=True):
        final = path_of(out["uri"])
        assert final.resolve().parent.parent == artifacts, (trace_id, final)
        assert final.read_bytes() == trace_id.encode()
        assert out["manifest"]["trace_id"] == trace_id, "the trace id itself is kept as sent"
    created = set(os.listdir(storage_root.parent)) - before
    assert all(name.startswith("storage.db") for name in created), created  # SQLite's own -wal/-shm at most
    assert sorted(os.listdir(storage_root)) == ["artifacts", "orphans", "temp"]


async def test_the_extension_of_the_upload_is_kept(bus: Bus, storage_root: Path) -> None:
    """The permanent file keeps a sane extension of the uploaded file and drops a hostile one."""
    _, kept = await register(bus, storage_root, b"csv", filename="table.csv", trace_id="t")
    _, dropped = await register(bus, storage_root, b"odd", filename="odd.b@d", trace_id="t")
    assert path_of(kept["uri"]).name.endswith(".csv")
    assert path_of(dropped["uri"]).suffix == ""


async def test_twin_envelopes_registering_one_artifact_at_once_have_one_effect(bus: Bus, storage_root: Path) -> None:
    """Two envelopes carrying the same new manifest, sent together: one registers, the other is told it exists."""
    manifest = manifest_for(storage_root, b"twins", visibility="public")
    replies = await asyncio.gather(call_register(bus, manifest), call_register(bus, manifest))
    outs = sorted((output(r) for r in replies), key=lambda o: o["registered"])
    assert [(o["registered"], o["already_exists"]) for o in outs] == [(False, True), (True, False)]
    assert outs[0]["uri"] == outs[1]["uri"]
    assert path_of(outs[1]["uri"]).read_bytes() == b"twins"
    assert [p.name for p in (storage_root / "artifacts").rglob("*") if p.is_file()] == [path_of(outs[1]["uri"]).name]
