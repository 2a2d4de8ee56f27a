"""``storage-worker import DIR``: a legacy directory imported twice, read back through the wire."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.importer import LEGACY_ID_LABEL, artifact_id
from tests.support.broker import ADMIN_AMQP
from tests.support.bus import Bus, error, output
from tests.support.databases import sqlite_url
from tests.support.legacy_dir import Legacy, build, naive_utc
from tests.support.workers import Workers, make_settings, running

MAX_FILE_BYTES = 4096


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str, storage_root: Path) -> Iterator[None]:
    """The worker's settings as the command line reads them: from the environment."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STORAGE_ROOT", storage_root.as_uri())
    monkeypatch.setenv("STORAGE_MAX_FILE_BYTES", str(MAX_FILE_BYTES))
    monkeypatch.setattr("service.cli.setup_logging", lambda settings: None)  # keep pytest's log capture
    yield


@pytest.fixture
def legacy(tmp_path: Path) -> Legacy:
    return build(tmp_path / "legacy", big_bytes=MAX_FILE_BYTES + 1)


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``storage-worker`` in a thread of its own (it runs its own event loop); exit code, stdout, stderr."""
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table(out: str) -> dict[str, int]:
    """The summary table's rows as label → number."""
    return {m[1].strip(): int(m[2]) for m in re.finditer(r"^ {2,}(\S[^\n]*?)\s{2,}(\d+)$", out, re.M)}


@pytest.fixture
def reader(workers: Workers) -> Callable[[], Awaitable[Bus]]:
    """Starts a worker on the imported stores once the import is done; returns an agent to ask it."""

    async def start() -> Bus:
        return (await workers.start(max_file_bytes=MAX_FILE_BYTES))[1]

    return start


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


async def test_import_twice_imports_each_good_record_once_and_skips_the_broken(
    env: None, legacy: Legacy, storage_root: Path, capsys: pytest.CaptureFixture[str], reader: Any, tmp_path: Path
) -> None:
    """Good records arrive whole, broken ones are reported by reason and leave nothing behind; a re-run adds nothing."""
    assert (await cli(capsys, "migrate"))[0] == 0
    report = tmp_path / "skipped.jsonl"
    code, out, err = await cli(capsys, "import", str(legacy.root), "--no-progress", "--report", str(report))
    assert code == 1, out + err  # some records were skipped
    counts = table(out)
    expected_skips = {reason: len(ids) for reason, ids in legacy.broken.items()}
    assert counts["records"] == legacy.total
    assert counts["imported"] == len(legacy.good)
    assert counts["already present"] == 0
    assert counts["skipped"] == sum(expected_skips.values())
    assert {k: v for k, v in counts.items() if k in expected_skips} == expected_skips
    reported = [json.loads(line) for line in report.read_text().splitlines()]
    assert {(r["legacy_id"], r["reason"]) for r in reported} == {
        (legacy_id, reason) for reason, ids in legacy.broken.items() for legacy_id in ids
    }
    for legacy_id in legacy.broken["checksum_mismatch"]:
        assert f"skipped {legacy_id}: checksum_mismatch" in err

    assert files_under(storage_root / "temp") == []  # no half-imported copy of a skipped record
    assert len(files_under(storage_root / "artifacts")) == len(legacy.good)

    code, out, _ = await cli(capsys, "import", str(legacy.root), "--no-progress")
    again = table(out)
    assert (again["imported"], again["already present"]) == (0, len(legacy.good))
    assert again["skipped"] == counts["skipped"]
    assert len(files_under(storage_root / "artifacts")) == len(legacy.good)
    assert files_under(storage_root / "temp") == []

    bus = await reader()
    stats = output(await bus.call("get_stats"))
    assert stats["artifacts"]["total"] == len(legacy.good)
    for good in legacy.good:
        got = output(await bus.call("get_artifact", {"artifact_id": artifact_id(good.legacy_id)}, amqp=ADMIN_AMQP))
        manifest = got["manifest"]
        assert manifest["status"] == "completed"
        assert manifest["visibility"] == good.row["visibility"].lower()
        assert manifest["checksum"] == good.row["checksum"]
        assert manifest["owner"] == (good.row["owner"] or good.row["created_by"])
        assert naive_utc(good.row["created_at"]) == naive_utc(manifest["created_at"].replace("Z", "")[:26])
        assert Path(manifest["uri"].removeprefix("file://")).read_bytes() == good.data
    for ids in legacy.broken.values():
        for legacy_id in ids:
            missing = error(await bus.call("get_artifact", {"artifact_id": artifact_id(legacy_id)}, amqp=ADMIN_AMQP))
            assert missing["code"] == "NOT_FOUND"


async def test_imported_values_are_mapped_to_our_manifest(
    env: None, legacy: Legacy, capsys: pytest.CaptureFixture[str], reader: Any
) -> None:
    """Legacy ids outside our pattern get a stable art_ id and a legacy_id label; chains and context follow."""
    assert (await cli(capsys, "migrate"))[0] == 0
    await cli(capsys, "import", str(legacy.root), "--no-progress")
    bus = await reader()
    by_label = output(await bus.call("list_artifacts", {"labels": {LEGACY_ID_LABEL: "report-3"}}, amqp=ADMIN_AMQP))[
        "artifacts"
    ]
    assert [m["id"] for m in by_label] == [artifact_id("report-3")]
    assert re.fullmatch(r"art_[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", by_label[0]["id"])
    successors = [g for g in legacy.good if g.row["supersedes"]]
    assert successors
    for good in successors:
        latest = output(
            await bus.call(
                "get_artifact", {"artifact_id": artifact_id(good.row["supersedes"]), "latest": True}, amqp=ADMIN_AMQP
            )
        )
        assert latest["artifact_id"] == artifact_id(good.legacy_id)
        assert latest["manifest"]["version"] == 2
    fed = next(g for g in legacy.good if "input_artifacts" in (g.row["context"] or ""))
    manifest = output(await bus.call("get_artifact", {"artifact_id": fed.legacy_id}, amqp=ADMIN_AMQP))["manifest"]
    wanted = [artifact_id(i) for i in json.loads(fed.row["context"])["input_artifacts"]]
    assert manifest["context"]["input_artifacts"] == wanted
    plain = next(g for g in legacy.good if g.row["id"].startswith("art_") and g.row["retention"] == "30d")
    got = output(await bus.call("get_artifact", {"artifact_id": plain.legacy_id}, amqp=ADMIN_AMQP))["manifest"]
    assert got["retention"] == "30d"
    assert got["context"]["model_params"] == {"temperature": 0.2, "max_tokens": 512}


async def test_dry_run_reports_what_an_import_would_do_and_changes_nothing(
    env: None, legacy: Legacy, storage_root: Path, capsys: pytest.CaptureFixture[str], reader: Any
) -> None:
    """--dry-run verifies every file and prints the same counts, but nothing is registered or copied."""
    code, out, _ = await cli(capsys, "import", str(legacy.root), "--dry-run", "--no-progress")
    assert code == 1
    assert "dry run" in out
    counts = table(out)
    assert counts["would import"] == len(legacy.good)
    assert {reason: counts[reason] for reason in legacy.broken} == {r: len(i) for r, i in legacy.broken.items()}
    assert files_under(storage_root / "artifacts") == [] and files_under(storage_root / "temp") == []
    bus = await reader()
    assert output(await bus.call("get_stats"))["artifacts"]["total"] == 0


async def test_import_refuses_while_a_worker_owns_the_sqlite_database(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    storage_root: Path,
    amqp_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With SQLite the import needs the database to itself: beside a running worker it says so and exits 2."""
    url = sqlite_url(tmp_path)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("STORAGE_ROOT", storage_root.as_uri())
    monkeypatch.setattr("service.cli.setup_logging", lambda settings: None)
    source = build(tmp_path / "legacy", good=40, each_broken=1)
    settings = make_settings(amqp_url, url, storage_root)
    async with running(settings):
        code, _, err = await cli(capsys, "import", str(source.root), "--no-progress")
    assert code == 2 and "running worker owns the SQLite database" in err
    code, out, _ = await cli(capsys, "import", str(source.root), "--no-progress")
    assert table(out)["imported"] == len(source.good)


async def test_a_directory_that_is_not_a_legacy_store_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pointing the import at the wrong directory exits 2 naming what is missing, before touching anything."""
    monkeypatch.setattr("service.cli.setup_logging", lambda settings: None)
    code, _, err = await cli(capsys, "import", str(tmp_path), "--no-progress")
    assert code == 2 and "storage.db" in err
