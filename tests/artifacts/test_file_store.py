"""The file store without a broker: path confinement, the temp → artifacts → orphans moves, hashing, links."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path

import pytest

from contracts import InvalidArgument, NotFound, PermissionDenied, StorageError, Unavailable
from service.files import FileStore, Upload, _call, safe_segment
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


def test_upload_uris_under_temp_resolve(store: FileStore, root: Path) -> None:
    """Absolute file URIs, plain paths, relative paths and harmless encodings of a file under temp/ resolve."""
    target = str(root / "temp" / "a b.bin")
    assert store.resolve_upload((root / "temp" / "a b.bin").as_uri()) == target
    assert store.resolve_upload(f"file://{root}/temp/a%20b.bin") == target
    assert store.resolve_upload(f"file://localhost{root}/temp/a b.bin") == target
    assert store.resolve_upload(target) == target
    assert store.resolve_upload("temp/a b.bin") == target
    assert store.resolve_upload(f"{root}/temp/./a b.bin") == target
    assert store.resolve_upload("temp/sub/a.bin") == str(root / "temp" / "sub" / "a.bin")


def test_stored_uris_resolve_under_artifacts_only(store: FileStore, root: Path) -> None:
    """A stored artifact's URI resolves under artifacts/ as written, a link in it never followed."""
    assert store.resolve_stored(f"file://{root}/artifacts/t/art.bin") == str(root / "artifacts" / "t" / "art.bin")
    (root / "artifacts" / "t").mkdir()
    (root / "artifacts" / "t" / "link.bin").symlink_to(root / "temp" / "x.bin")
    assert store.resolve_stored(f"file://{root}/artifacts/t/link.bin") == str(root / "artifacts" / "t" / "link.bin")
    for elsewhere in (f"file://{root}/temp/x.bin", f"file://{root}/orphans/x.bin", "/etc/passwd"):
        with pytest.raises(PermissionDenied):
            store.resolve_stored(elsewhere)


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
        "{root}/artifacts/t/x.bin",
        "artifacts/t/x.bin",
        "{root}/temp-evil/x",
        "{root}-evil/temp/x",
        "{root}/storage.db",
    ],
)
def test_anything_else_is_permission_denied(store: FileStore, root: Path, uri: str) -> None:
    """Traversal, foreign schemes, hosts, encoded dot-dots and NULs, and paths outside temp/ (artifacts/ too:
    another artifact's file is nobody's upload) are refused."""
    text = uri.format(root=root)
    with pytest.raises(PermissionDenied) as refused:
        store.resolve_upload(text)
    if text.startswith("/"):
        with pytest.raises(PermissionDenied):
            store.resolve_upload(f"file://{text}")
    assert "uri" in refused.value.details


async def test_links_are_never_followed_to_an_upload(store: FileStore, root: Path, tmp_path: Path) -> None:
    """A link in temp/ is refused when opened, wherever it leads (even to another temp file); a linked folder
    leading out of temp/ is refused at once."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x")
    (root / "temp" / "out.bin").symlink_to(outside)
    (root / "temp" / "dir").symlink_to(tmp_path, target_is_directory=True)
    (root / "temp" / "real.bin").write_bytes(b"y")
    (root / "temp" / "in.bin").symlink_to(root / "temp" / "real.bin")
    with pytest.raises(PermissionDenied):
        store.resolve_upload(f"file://{root}/temp/dir/outside.bin")
    for name in ("out.bin", "in.bin"):
        path = store.resolve_upload((root / "temp" / name).as_uri())
        with pytest.raises(PermissionDenied, match="link"):
            await store.stage(path, name, expected_size=1, max_bytes=100)


async def test_a_folder_swapped_for_a_link_after_resolving_is_refused(
    store: FileStore, root: Path, tmp_path: Path
) -> None:
    """A subfolder of temp/ replaced by a link between resolve_upload and the open leads nowhere."""
    (root / "temp" / "sub").mkdir()
    (root / "temp" / "sub" / "f.bin").write_bytes(b"z")
    path = store.resolve_upload(f"file://{root}/temp/sub/f.bin")
    upload = await store.stage(path, "u", expected_size=1, max_bytes=100)
    assert upload.checksum == checksum(b"z") and upload.dir_fd is not None
    upload.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "f.bin").write_bytes(b"s")
    (root / "temp" / "sub").rename(root / "temp" / "sub-old")
    (root / "temp" / "sub").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(PermissionDenied):
        await store.stage(path, "u", expected_size=1, max_bytes=100)


@pytest.mark.parametrize(
    ("name", "code"), [("x" * 300 + ".bin", "INVALID_ARGUMENT"), ("a.bin/inner", "INVALID_ARGUMENT")]
)
async def test_names_the_file_system_cannot_hold_are_the_agents_fault(
    store: FileStore, root: Path, name: str, code: str
) -> None:
    """A 300-character name or a file used as a folder is INVALID_ARGUMENT (not retryable), not UNAVAILABLE."""
    (root / "temp" / "a.bin").write_bytes(b"a")
    with pytest.raises(StorageError) as refused:
        path = store.resolve_upload(f"temp/{name}")
        await store.stage(path, name, expected_size=1, max_bytes=100)
    assert refused.value.code.value == "INVALID_ARGUMENT" and not refused.value.retryable


def test_storage_failures_stay_retryable_and_path_faults_do_not() -> None:
    """EIO and ENOSPC are the storage's (UNAVAILABLE, retryable); ENAMETOOLONG, ENOTDIR and ELOOP are not."""

    def failing(code: int) -> None:
        raise OSError(code, os.strerror(code))

    for code in (errno.EIO, errno.ENOSPC):
        with pytest.raises(Unavailable):
            _call(failing, code)
    for code in (errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR):
        with pytest.raises(InvalidArgument):
            _call(failing, code)
    with pytest.raises(PermissionDenied):
        _call(failing, errno.ELOOP)


def test_a_root_reached_through_a_symlink_still_confines(tmp_path: Path) -> None:
    """A storage root configured through a symlink confines to its real location."""
    real = tmp_path / "real-root"
    real.mkdir()
    link = tmp_path / "link-root"
    link.symlink_to(real, target_is_directory=True)
    files = FileStore(link.as_uri())
    files.ensure_layout()
    assert files.resolve_upload(f"{link}/temp/x.bin") == str(real / "temp" / "x.bin")
    with pytest.raises(PermissionDenied):
        files.resolve_upload(f"{link}/../outside")


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


async def test_stage_reads_size_and_checksum_and_refuses_what_is_not_a_file(store: FileStore, root: Path) -> None:
    """A register's check: size and sha256 of the upload; a folder or a FIFO planted in temp/ is refused at
    once (a FIFO never blocks the worker waiting for a writer); a missing file is NOT_FOUND."""
    path = root / "temp" / "f.bin"
    path.write_bytes(b"content")
    upload = await store.stage(str(path), "f", expected_size=7, max_bytes=100)
    assert (upload.size, upload.checksum) == (7, checksum(b"content")) and upload.modified is not None
    assert upload.fd is not None, "the hashed file stays open until it is placed"
    upload.close()
    upload = await store.stage(str(path), "f", expected_size=8, max_bytes=100)
    assert (upload.size, upload.checksum, upload.fd) == (7, None, None), "another size than announced: never read"
    with pytest.raises(NotFound):
        await store.stage(str(root / "temp" / "missing.bin"), "m", expected_size=1, max_bytes=100)
    (root / "temp" / "folder").mkdir()
    with pytest.raises(InvalidArgument, match="directory"):
        await store.stage(str(root / "temp" / "folder"), "d", expected_size=1, max_bytes=100)
    os.mkfifo(root / "temp" / "pipe.bin")
    with pytest.raises(InvalidArgument, match="regular file"):
        await asyncio.wait_for(store.stage(str(root / "temp" / "pipe.bin"), "p", expected_size=1, max_bytes=100), 5)


async def _staged(store: FileStore, name: str, data: bytes) -> Upload:
    path = _temp(store, name, data)
    return await store.stage(str(path), path.as_uri(), expected_size=len(data), max_bytes=1 << 20)


async def test_place_moves_the_hashed_file_and_creates_a_missing_trace_folder(store: FileStore, root: Path) -> None:
    """The upload is renamed into a new trace folder: the very inode that was hashed, with no other name."""
    upload = await _staged(store, "first.bin", b"1")
    assert upload.stat is not None
    dest = store.artifact_path("new-trace", "art_1", upload.path)
    assert await store.place(upload, dest) is True
    upload.close()
    placed = Path(dest).lstat()
    assert Path(dest).read_bytes() == b"1" and not Path(upload.path).exists()
    assert (placed.st_ino, placed.st_nlink) == (upload.stat.st_ino, 1)


async def test_place_copies_a_hard_linked_upload(store: FileStore, root: Path, tmp_path: Path) -> None:
    """A temp file sharing its inode with a file elsewhere lands as a private copy; the other file is untouched."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"someone's bytes")
    os.link(outside, root / "temp" / "linked.bin")
    upload = await store.stage(str(root / "temp" / "linked.bin"), "l", expected_size=15, max_bytes=100)
    dest = store.artifact_path("t", "art_h", upload.path)
    assert await store.place(upload, dest) is True
    upload.close()
    assert Path(dest).read_bytes() == b"someone's bytes"
    assert Path(dest).stat().st_nlink == 1 and Path(dest).stat().st_ino != outside.stat().st_ino
    assert outside.read_bytes() == b"someone's bytes"


async def test_a_link_renamed_over_the_upload_is_set_aside_and_the_hashed_bytes_placed(
    store: FileStore, root: Path, tmp_path: Path
) -> None:
    """Between the hash and the move a link replaces the upload: the link goes to orphans/ as a link, the
    artifact gets the bytes that were hashed, and what the link points at is never touched."""
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"victim")
    upload = await _staged(store, "up.bin", b"hashed bytes")
    swap = root / "temp" / "swap.bin"
    swap.symlink_to(victim)
    swap.rename(upload.path)
    dest = store.artifact_path("t", "art_s", upload.path)
    assert await store.place(upload, dest) is True
    upload.close()
    assert not Path(dest).is_symlink() and Path(dest).read_bytes() == b"hashed bytes"
    set_aside = Path(store.orphan_path(dest))
    assert set_aside.is_symlink() and victim.read_bytes() == b"victim"


async def test_bytes_changed_after_hashing_are_never_placed(store: FileStore, root: Path) -> None:
    """An upload rewritten in place after it was hashed is not placed: place says so and leaves nothing."""
    upload = await _staged(store, "late.bin", b"hashed")
    Path(upload.path).write_bytes(b"forged, longer")
    dest = store.artifact_path("t", "art_c", upload.path)
    assert await store.place(upload, dest) is False
    upload.close()
    assert not os.path.lexists(dest)


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


async def test_links_are_moved_and_removed_as_links(store: FileStore, root: Path, tmp_path: Path) -> None:
    """A link retired to orphans/ and then deleted leaves what it points at where it was, bytes and mtime."""
    target = tmp_path / "someone-elses.bin"
    target.write_bytes(b"keep me")
    os.utime(target, (1_000_000, 1_000_000))
    link = root / "artifacts" / "t" / "link.bin"
    link.parent.mkdir()
    link.symlink_to(target)
    moved = await store.to_orphans(str(link))
    assert moved is not None and Path(moved).is_symlink() and not os.path.lexists(link)
    await store.remove(moved)
    assert not os.path.lexists(moved)
    assert target.read_bytes() == b"keep me" and target.stat().st_mtime == 1_000_000


async def test_walk_lists_files_with_sizes_and_links_as_links(store: FileStore, root: Path, tmp_path: Path) -> None:
    """walk() sees every file below a folder, however deep, and each link as an entry of its own, never
    descending into a linked folder."""
    for name in ("a/1.bin", "a/b/2.bin", "3.bin"):
        path = root / "artifacts" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"xx")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.bin").write_bytes(b"secret")
    (root / "artifacts" / "linkdir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    found = await store.walk("artifacts")
    assert sorted(Path(f.path).relative_to(root / "artifacts").as_posix() for f in found) == [
        "3.bin",
        "a/1.bin",
        "a/b/2.bin",
        "linkdir",
    ]
    assert {f.size for f in found if not f.path.endswith("linkdir")} == {2}
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
    upload = await _staged(store, "late.bin", b"verified bytes")
    retired = await store.to_orphans(upload.path)
    assert retired is not None and not Path(upload.path).exists()
    dest = store.artifact_path("trace-1", "art_00000000-0000-4000-8000-000000000000", upload.path)
    assert await store.place(upload, dest) is True
    upload.close()
    assert Path(dest).read_bytes() == b"verified bytes"


async def test_to_orphans_starts_the_orphan_clock_at_the_move(store: FileStore) -> None:
    """A long-forgotten file moved to orphans/ is kept its full grace period, not deleted on the next sweep."""
    staged = _temp(store, "old.bin", b"x")
    week_ago = time.time() - 8 * 86400
    os.utime(staged, (week_ago, week_ago))
    retired = await store.to_orphans(store.resolve_upload(staged.as_uri()))
    assert retired is not None
    assert time.time() - Path(retired).stat().st_mtime < 3600
