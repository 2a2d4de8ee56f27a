"""Class 6 of issue 16 (files) and the file-name part of class 2, sent as an attacker would.

Mallory shares the storage root with Bob: she can write temp/ and, knowing an artifact's id and trace,
name any path under the root. She used register_artifact to copy Bob's private file into a public
artifact of hers (reading its real size and checksum out of the errors), to delete Bob's pending
upload with a wrong checksum, and to swap a link in for her upload mid-registration so that cleanup
later retired Bob's file. A hard link into temp/ made an artifact share its bytes with a file outside
the root. A 300-character file name was UNAVAILABLE, which clients retry forever.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from service.transport.worker import Worker
from tests.support.artifacts import checksum, manifest_for, new_artifact_id, write_temp
from tests.support.broker import BROKER_USER
from tests.support.bus import Bus, error, output
from tests.support.wire import path_of, register
from tests.support.workers import Workers

pytestmark = pytest.mark.security

ADMIN = {"user_id": BROKER_USER}
BOB = {"requester_id": "bob", "requester_trace_id": "bob-trace"}
MALLORY = {"requester_id": "mallory", "requester_trace_id": "mallory-trace"}


async def start(workers: Workers) -> tuple[Worker, Bus]:
    return await workers.start(admins=frozenset({BROKER_USER}))


async def attempt(bus: Bus, manifest: dict[str, Any]) -> dict[str, Any]:
    return await bus.call("register_artifact", {"manifest": manifest}, context=MALLORY)


async def test_anothers_artifact_file_cannot_be_registered_nor_probed(workers: Workers, storage_root: Path) -> None:
    """6a: Mallory names Bob's private artifact file as her upload, lying about size then checksum: every try
    is PERMISSION_DENIED, no answer tells the file's size or checksum, and nothing of hers is registered."""
    _, bus = await start(workers)
    secret = b"bob's private findings, 41 bytes of them"
    _, bobs = await register(bus, storage_root, secret, visibility="private", command_context=BOB)
    stolen_uri = bobs["uri"]

    tries = [
        {"size_bytes": 1, "checksum": checksum(b"guess")},
        {"size_bytes": len(secret), "checksum": checksum(b"guess")},
        {"size_bytes": len(secret), "checksum": checksum(secret)},
    ]
    for lie in tries:
        manifest = {**manifest_for(storage_root, b"decoy", visibility="public"), "uri": stolen_uri, **lie}
        err = error(await attempt(bus, manifest))
        assert err["code"] == "PERMISSION_DENIED", err
        said = json.dumps(err)
        assert checksum(secret) not in said or lie["checksum"] == checksum(secret), f"the real checksum leaked: {said}"
        assert "actual" not in err["details"] and len(secret) not in err["details"].values(), said
    mine = output(await bus.call("list_artifacts", {"created_by": "agent-test"}, context=MALLORY))["artifacts"]
    assert [m["id"] for m in mine] == [], "Mallory owns no copy of Bob's file"
    assert path_of(stolen_uri).read_bytes() == secret


async def test_refusals_on_a_temp_file_never_tell_its_size_or_checksum(workers: Workers, storage_root: Path) -> None:
    """6a: a wrong size or checksum for someone's pending upload answers with what was claimed, never what the
    file holds."""
    _, bus = await start(workers)
    pending = write_temp(storage_root, b"bob's upload, not yet registered", "bob-upload.bin")
    size_lie = manifest_for(storage_root, b"x", uri=pending.as_uri(), size_bytes=3)
    err = error(await attempt(bus, size_lie))
    assert err["code"] == "INVALID_ARGUMENT" and "actual" not in err["details"], err
    assert pending.stat().st_size not in err["details"].values(), err
    sum_lie = manifest_for(storage_root, b"x", uri=pending.as_uri(), size_bytes=pending.stat().st_size)
    said = json.dumps(error(await attempt(bus, sum_lie)))
    assert checksum(pending.read_bytes()) not in said and "actual" not in said, said


async def test_a_failed_registration_never_deletes_anothers_upload(workers: Workers, storage_root: Path) -> None:
    """6b: Mallory names Bob's pending upload with a wrong checksum; the upload stays and Bob registers it."""
    _, bus = await start(workers)
    data = b"bob's upload in temp/, waiting for its manifest"
    bobs = manifest_for(storage_root, data, visibility="private")
    sabotage = {**bobs, "id": new_artifact_id(), "checksum": checksum(b"wrong")}
    assert error(await attempt(bus, sabotage))["code"] == "INVALID_ARGUMENT"
    assert path_of(bobs["uri"]).read_bytes() == data, "the refused registration deleted Bob's upload"
    registered = output(await bus.call("register_artifact", {"manifest": bobs}, context=BOB))
    assert registered["registered"] is True and path_of(registered["uri"]).read_bytes() == data


async def test_a_link_swapped_in_mid_registration_never_reaches_artifacts(
    workers: Workers, storage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """6c: between the worker's checks and its move, Mallory renames a link to Bob's artifact file over her
    upload. Her artifact holds her own hashed bytes, not a link, and when it expires cleanup retires her file,
    never Bob's."""
    worker, bus = await start(workers)
    _, bobs = await register(bus, storage_root, b"bob's report", visibility="private", command_context=BOB)
    bobs_file = path_of(bobs["uri"])
    mine = b"mallory's innocent-looking bytes"
    manifest = manifest_for(storage_root, mine, retention="1s", visibility="public")
    upload = path_of(manifest["uri"])

    files = worker.services.files  # type: ignore[union-attr]
    move = files.place

    async def race_then_move(*args: Any, **kwargs: Any) -> Any:
        """The worker checked the upload; now the attacker swaps a link in under its name."""
        bait = upload.with_name("bait.bin")
        bait.symlink_to(bobs_file)
        bait.rename(upload)
        return await move(*args, **kwargs)

    monkeypatch.setattr(files, "place", race_then_move)
    out = output(await attempt(bus, manifest))
    monkeypatch.undo()
    placed = path_of(out["uri"])
    assert not placed.is_symlink(), "a link landed in artifacts/"
    assert placed.read_bytes() == mine

    await asyncio.sleep(1.2)  # Mallory's retention runs out
    output(await bus.call("cleanup", {"scopes": ["expired_artifacts"]}, amqp=ADMIN))
    assert bobs_file.read_bytes() == b"bob's report", "cleanup followed the link and retired Bob's file"
    got = output(await bus.call("get_artifact", {"artifact_id": bobs["artifact_id"]}, context=BOB))
    assert got["manifest"]["status"] == "completed"


async def test_a_hard_link_to_a_file_outside_the_root_is_not_shared(workers: Workers, storage_root: Path) -> None:
    """6c: an upload hard-linked to a file outside the root registers as a copy: rewriting the outside file
    later leaves the artifact's bytes (and its checksum) as registered."""
    _, bus = await start(workers)
    outside = storage_root.parent / "mallory-outside.bin"
    outside.write_bytes(b"bytes as registered")
    upload = storage_root / "temp" / "linked.bin"
    os.link(outside, upload)
    manifest = manifest_for(storage_root, b"bytes as registered", filename="linked.bin", visibility="public")
    out = output(await attempt(bus, manifest))
    placed = path_of(out["uri"])
    with outside.open("r+b") as handle:  # rewritten in place, as a shared inode would show
        handle.write(b"BYTES")
    assert placed.read_bytes() == b"bytes as registered"
    assert checksum(placed.read_bytes()) == out["checksum"]
    assert placed.stat().st_nlink == 1


async def test_a_300_character_file_name_is_invalid_argument(workers: Workers, storage_root: Path) -> None:
    """2: a file name longer than any file system holds is the agent's mistake, INVALID_ARGUMENT and not
    retryable (UNAVAILABLE made clients retry it forever)."""
    _, bus = await start(workers)
    manifest = manifest_for(storage_root, b"x")
    manifest["uri"] = (storage_root / "temp" / ("n" * 300 + ".bin")).as_uri()
    err = error(await attempt(bus, manifest))
    assert err["code"] == "INVALID_ARGUMENT" and err["retryable"] is False, err
