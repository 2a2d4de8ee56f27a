"""The file store without a broker: path confinement, the temp → artifacts → orphans moves, hashing."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from contracts import InvalidArgument, NotFound, PermissionDenied
from service.files import FileStore, safe_segment
from tests.support.artifacts import checksum


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = (tmp_path / "root").resolve()
    folder.mkdir()
    return folder


@pytest.fixture
def store(root: Path) -> FileStore:
    files = FileStore(root.as_uri())
    files.ensure_layout()
    return files


def test_layout_has_the_three_folders(store: FileStore, root: Path) -> None:
    """A new storage root gets artifacts/, temp/ and orphans/."""
    assert sorted(p.name for p in root.iterdir()) == ["artifacts", "orphans", "temp"]


def test_uris_under_temp_and_artifacts_resolve(store: FileStore, root: Path) -> None:
    """Absolute file URIs, plain paths, relative paths and harmless encodings under temp/ or artifacts/ resolve."""
    target = str(root / "temp" / "a b.bin")
    assert store.resolve_incoming((root / "temp" / "a b.bin").as_uri()) == target
    assert store.resolve_incoming(f"file://{root}/temp/a%20b.bin") == target
    assert store.resolve_incoming(f"file://localhost{root}/temp/a b.bin") == target
    assert store.resolve_incoming(target) == target
    assert store.resolve_incoming("temp/a b.bin") == target
    assert store.resolve_incoming(f"{root}/temp/./a b.bin") == target
    assert store.resolve_incoming("artifacts/t/art.bin") == str(root / "artifacts" / "t" / "art.bin")


@pytest.mark.parametrize(
    "uri",
    [
        "{root}/temp/../../secret",
        "temp/../../secret",
        "temp/../orphans/x",
        "../root/temp/x",
        "http://example.com/temp/x",
        "s3://bucket/temp/x",
        "ftp://{root}/temp/x",
        "file://example.com{root}/temp/x",
        "{root}/temp/%2e%2e/%2e%2e/secret",
        "{root}/temp%2f..%2f..%2fsecret",
        "{root}/temp/x%00.bin",
        "{root}/temp/x\x00.bin",
        "/etc/passwd",
        "{root}",
        "{root}/temp",
        "{root}/orphans/x",
        "{root}/temp-evil/x",
        "{root}-evil/temp/x",
        "{root}/storage.db",
    ],
)
def test_anything_else_is_permission_denied(store: FileStore, root: Path, uri: str) -> None:
    """Traversal, foreign schemes, hosts, encoded dot-dots and NULs, and paths outside the two folders are refused."""
    text = uri.format(root=root)
    with pytest.raises(PermissionDenied) as refused:
        store.resolve_incoming(text)
    if text.startswith("/"):
        with pytest.raises(PermissionDenied):
            store.resolve_incoming(f"file://{text}")
    assert "uri" in refused.value.details


def test_symlinks_are_judged_by_where_they_lead(store: FileStore, root: Path, tmp_path: Path) -> None:
    """A symlink in temp/ pointing outside is refused; one pointing to another temp file is followed."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x")
    (root / "temp" / "out.bin").symlink_to(outside)
    (root / "temp" / "dir").symlink_to(tmp_path, target_is_directory=True)
    (root / "temp" / "real.bin").write_bytes(b"y")
    (root / "temp" / "in.bin").symlink_to(root / "temp" / "real.bin")
    with pytest.raises(PermissionDenied):
        store.resolve_incoming((root / "temp" / "out.bin").as_uri())
    with pytest.raises(PermissionDenied):
        store.resolve_incoming(f"file://{root}/temp/dir/outside.bin")
    assert store.resolve_incoming((root / "temp" / "in.bin").as_uri()) == str(root / "temp" / "real.bin")


def test_a_root_reached_through_a_symlink_still_confines(tmp_path: Path) -> None:
    """A storage root configured through a symlink confines to its real location."""
    real = tmp_path / "real-root"
    real.mkdir()
    link = tmp_path / "link-root"
    link.symlink_to(real, target_is_directory=True)
    files = FileStore(link.as_uri())
    files.ensure_layout()
    assert files.resolve_incoming(f"{link}/temp/x.bin") == str(real / "temp" / "x.bin")
    with pytest.raises(PermissionDenied):
        files.resolve_incoming(f"{link}/../outside")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("trace-1", "trace-1"),
        ("../../etc", ".._.._etc"),
        ("..", "_"),
        (".", "_"),
        ("", "_"),
        ("a/b", "a_b"),
        ("Москва", "______"),
        ("x" * 300, "x" * 128),
    ],
)
def test_safe_segment_never_escapes(value: str, expected: str) -> None:
    """A trace id becomes one harmless folder name, whatever it contains."""
    assert safe_segment(value) == expected


def test_artifact_path_keeps_a_sane_extension(store: FileStore, root: Path) -> None:
    """The permanent path is artifacts/<trace>/<id><ext>, the extension taken from the upload when sane."""
    assert store.artifact_path("t", "art_1", "/x/temp/a.tar.gz") == str(root / "artifacts" / "t" / "art_1.gz")
    assert store.artifact_path("../t", "art_1", "/x/temp/a") == str(root / "artifacts" / ".._t" / "art_1")
    assert store.artifact_path("t", "art_1", "/x/temp/a.ex$e") == str(root / "artifacts" / "t" / "art_1")


async def test_info_and_sha256(store: FileStore, root: Path) -> None:
    """Size and sha256 of a file; NOT_FOUND when missing; INVALID_ARGUMENT for a folder."""
    path = root / "temp" / "f.bin"
    path.write_bytes(b"content")
    info = await store.info(str(path))
    assert info.size == 7 and info.modified is not None
    assert await store.sha256(str(path)) == checksum(b"content")
    with pytest.raises(NotFound):
        await store.info(str(root / "temp" / "missing.bin"))
    with pytest.raises(NotFound):
        await store.sha256(str(root / "temp" / "missing.bin"))
    with pytest.raises(InvalidArgument):
        await store.info(str(root / "temp"))


async def test_inspect_reads_size_and_checksum_and_refuses_what_is_not_a_file(store: FileStore, root: Path) -> None:
    """A register's check: size and sha256 of the upload; a folder or a FIFO planted in temp/ is refused at
    once (a FIFO never blocks the worker waiting for a writer); a missing file is NOT_FOUND."""
    path = root / "temp" / "f.bin"
    path.write_bytes(b"content")
    info, actual = await store.inspect(str(path), expected_size=7, max_bytes=100)
    assert (info.size, actual) == (7, checksum(b"content")) and info.modified is not None
    info, actual = await store.inspect(str(path), expected_size=8, max_bytes=100)
    assert (info.size, actual) == (7, None), "a file of another size than announced is never read"
    with pytest.raises(NotFound):
        await store.inspect(str(root / "temp" / "missing.bin"), expected_size=1, max_bytes=100)
    with pytest.raises(InvalidArgument, match="directory"):
        await store.inspect(str(root / "temp"), expected_size=1, max_bytes=100)
    os.mkfifo(root / "temp" / "pipe.bin")
    with pytest.raises(InvalidArgument, match="regular file"):
        await asyncio.wait_for(store.inspect(str(root / "temp" / "pipe.bin"), expected_size=1, max_bytes=100), 5)


async def test_place_creates_a_missing_trace_folder_and_reports_a_missing_source(store: FileStore, root: Path) -> None:
    """The first artifact of a trace gets its folder; a source that vanished is NOT found, not a silent no-op."""
    first = root / "temp" / "first.bin"
    first.write_bytes(b"1")
    dest = store.artifact_path("new-trace", "art_1", str(first))
    await store.place(str(first), dest)
    assert Path(dest).read_bytes() == b"1"
    with pytest.raises(FileNotFoundError):
        store._place(str(root / "temp" / "gone.bin"), store.artifact_path("new-trace", "art_2", "x.bin"))


async def test_place_moves_temp_files_and_copies_artifacts(store: FileStore, root: Path) -> None:
    """A temp upload is moved into place; a source under artifacts/ is copied (another artifact owns it)."""
    temp = root / "temp" / "up.bin"
    temp.write_bytes(b"up")
    dest = store.artifact_path("t", "art_a", str(temp))
    await store.place(str(temp), dest)
    assert Path(dest).read_bytes() == b"up" and not temp.exists()
    second = store.artifact_path("t2", "art_b", dest)
    await store.place(dest, second)
    assert Path(dest).read_bytes() == Path(second).read_bytes() == b"up"


async def test_to_orphans_keeps_the_relative_path(store: FileStore, root: Path) -> None:
    """An orphaned file keeps its path below the root under orphans/; a file already gone gives None."""
    path = root / "artifacts" / "t" / "art.bin"
    path.parent.mkdir()
    path.write_bytes(b"old")
    moved = await store.to_orphans(str(path))
    assert moved == str(root / "orphans" / "artifacts" / "t" / "art.bin")
    assert Path(moved).read_bytes() == b"old" and not path.exists()
    assert await store.to_orphans(str(path)) is None
    assert await store.to_orphans(moved) == moved, "orphans are not nested again"


async def test_walk_lists_files_with_sizes(store: FileStore, root: Path) -> None:
    """walk() sees every file below a folder, however deep, and nothing else."""
    for name in ("a/1.bin", "a/b/2.bin", "3.bin"):
        path = root / "artifacts" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"xx")
    found = await store.walk("artifacts")
    assert sorted(Path(f.path).relative_to(root / "artifacts").as_posix() for f in found) == [
        "3.bin",
        "a/1.bin",
        "a/b/2.bin",
    ]
    assert {f.size for f in found} == {2}
    assert await store.walk("nowhere") == []


async def test_hashing_does_not_block_the_event_loop(store: FileStore, root: Path) -> None:
    """While a file is hashed, other coroutines keep running (the I/O happens in a thread)."""
    path = root / "temp" / "big.bin"
    path.write_bytes(b"z" * (8 * 1024 * 1024))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await store.sha256(str(path))
    finally:
        task.cancel()
    assert ticks > 1


def _temp(store: FileStore, name: str, data: bytes) -> Path:
    path = Path(store.join("temp", name))
    path.write_bytes(data)
    return path


async def test_place_takes_a_verified_file_back_from_orphans(store: FileStore) -> None:
    """A staged file retired by temp_orphans between the checks and the commit still lands at its permanent place."""
    staged = store.resolve_incoming(_temp(store, "late.bin", b"verified bytes").as_uri())
    retired = await store.to_orphans(staged)
    assert retired is not None and not Path(staged).exists()
    dest = store.artifact_path("trace-1", "art_00000000-0000-4000-8000-000000000000", staged)
    await store.place(staged, dest)
    assert Path(dest).read_bytes() == b"verified bytes"
    assert not Path(retired).exists()


async def test_to_orphans_starts_the_orphan_clock_at_the_move(store: FileStore) -> None:
    """A long-forgotten file moved to orphans/ is kept its full grace period, not deleted on the next sweep."""
    staged = _temp(store, "old.bin", b"x")
    week_ago = time.time() - 8 * 86400
    os.utime(staged, (week_ago, week_ago))
    retired = await store.to_orphans(store.resolve_incoming(staged.as_uri()))
    assert retired is not None
    assert time.time() - Path(retired).stat().st_mtime < 3600
