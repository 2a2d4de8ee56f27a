"""``/cleanup``: a dry run's counts per scope, and a run of the chosen scopes one by one with live progress
(admins only).

The run is a task of the console (one at a time, kept in ``app.state``): it asks the worker for one scope at
a time, so the page can say which scope is done, with its count or its error, and reloads itself each second
until the last one. The scopes run in the order the dry run listed them, which is the worker's own order (it
repairs missing files from ``temp/`` before old temp files go). While a run is on, no dry run is asked for:
the worker runs one cleanup at a time, so the dry run would only wait behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from buffer import BrokerUnavailable, CallTimeout, StorageClient, Unroutable
from console.pages.dlq import redirect_with_flash, refused, render_with_flash
from console.web import arg, bus_of, link, render
from contracts import CleanupScope, StorageError

log = logging.getLogger(__name__)

RUN_SCOPE_TIMEOUT_S = 600.0
"""How long one scope of a run may take before its row says it timed out (the worker may still finish it)."""
KEPT_RUNS = 20
"""Finished runs whose page still answers (the console forgets them on restart)."""

NOTES: dict[str, str] = {
    "expired_artifacts": "retention elapsed: row removed, file moved to orphans/",
    "expired_threads": "TTL elapsed: thread, messages and labels removed",
    "expired_memory": "memory items past their TTL: rows removed",
    "purge_deleted": "soft-deleted items older than STORAGE_PURGE_AFTER removed for good",
    "missing_files": "completed artifacts whose file is gone: put back from temp/, else failed",
    "verify_checksums": "a batch of files re-hashed (the count is the files checked)",
    "stale_uploading": "still uploading 1 h after registration: failed",
    "temp_orphans": "files in temp/ older than 1 h moved to orphans/temp/",
    "orphan_files": "files under artifacts/ no row points at (over 24 h old) moved to orphans/",
    "old_orphans": "files 7 days in orphans/ deleted",
    "inbox": "inbox records older than STORAGE_INBOX_RETENTION",
}


@dataclass
class ScopeResult:
    scope: str
    state: str = "waiting"
    """waiting, running, done or error."""
    count: int | None = None
    error: str | None = None
    seconds: float | None = None


@dataclass
class CleanupRun:
    """One run of chosen scopes, in order; what the progress page shows."""

    id: str
    scopes: list[ScopeResult]
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished: datetime | None = None
    task: asyncio.Task[None] | None = None

    @property
    def took_s(self) -> float | None:
        return (self.finished - self.started).total_seconds() if self.finished else None

    @property
    def state(self) -> str:
        return "done" if self.finished is not None else "running"

    @property
    def done(self) -> int:
        return sum(result.state in ("done", "error") for result in self.scopes)

    @property
    def errors(self) -> int:
        return sum(result.state == "error" for result in self.scopes)


@dataclass
class CleanupRuns:
    """The console's runs: the last ``KEPT_RUNS`` by id, and the one under way."""

    runs: OrderedDict[str, CleanupRun] = field(default_factory=OrderedDict)
    active: CleanupRun | None = None

    def add(self, run: CleanupRun) -> None:
        self.runs[run.id] = run
        self.active = run
        while len(self.runs) > KEPT_RUNS:
            self.runs.popitem(last=False)


def runs_of(state: State) -> CleanupRuns:
    runs: CleanupRuns | None = getattr(state, "cleanup_runs", None)
    if runs is None:
        runs = CleanupRuns()
        state.cleanup_runs = runs
    return runs


def _problem(exc: Exception) -> str:
    if isinstance(exc, StorageError):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, CallTimeout):
        return f"no answer within {RUN_SCOPE_TIMEOUT_S:.0f} s (the worker may still be at it)"
    return f"{type(exc).__name__}: {exc}"


async def _run(storage: StorageClient, run: CleanupRun, runs: CleanupRuns) -> None:
    """Each scope in turn; an error is that scope's result, and the next scope still runs."""
    try:
        for result in run.scopes:
            result.state = "running"
            began = time.monotonic()
            try:
                output = await storage.cleanup(scopes=[result.scope], timeout_s=RUN_SCOPE_TIMEOUT_S)
                result.count, result.state = output.counts.get(result.scope, 0), "done"
            except (StorageError, CallTimeout, BrokerUnavailable, Unroutable) as exc:
                result.error, result.state = _problem(exc), "error"
            except Exception as exc:  # the page must show it and the run go on; the log keeps the traceback
                log.exception("cleanup scope %s", result.scope)
                result.error, result.state = _problem(exc), "error"
            result.seconds = time.monotonic() - began
    finally:
        run.finished = datetime.now(UTC)
        if runs.active is run:
            runs.active = None


async def cleanup_page(request: Request) -> Response:
    if (denied := refused(request, "Cleanups")) is not None:
        return denied
    runs = runs_of(request.app.state)
    run_id = arg(request, "run", max_length=64)
    if run_id is not None:
        run = runs.runs.get(run_id)
        if run is None:
            message = f"no cleanup run {run_id!r} here (a console keeps its last {KEPT_RUNS} runs since it started)"
            return render(request, "error.html", status_code=404, code="NOT_FOUND", message=message)
        return render_with_flash(request, "cleanup.html", run=run, dry=None, active=runs.active, notes=NOTES)
    dry = None
    if runs.active is None:  # during a run the worker would answer the dry run only after it
        dry = await bus_of(request).storage.cleanup(dry_run=True)
    return render_with_flash(request, "cleanup.html", run=None, dry=dry, active=runs.active, notes=NOTES)


async def start_run(request: Request) -> Response:
    if (denied := refused(request, "Cleanups")) is not None:
        return denied
    runs = runs_of(request.app.state)
    if runs.active is not None:
        text = f"A cleanup is already running (run {runs.active.id}): here is its progress."
        return redirect_with_flash(link("/cleanup", run=runs.active.id), text, bad=True)
    form = await request.form(max_files=0, max_fields=64)
    known = {scope.value for scope in CleanupScope}
    chosen = [s for s in dict.fromkeys(str(v)[:64] for v in form.getlist("scope")) if s in known]
    if not chosen:
        return redirect_with_flash("/cleanup", "Choose at least one scope to run.", bad=True)
    run = CleanupRun(id=uuid.uuid4().hex[:12], scopes=[ScopeResult(scope) for scope in chosen])
    runs.add(run)
    run.task = asyncio.create_task(_run(bus_of(request).storage, run, runs), name=f"cleanup-{run.id}")
    return RedirectResponse(link("/cleanup", run=run.id), status_code=303)


routes: list[BaseRoute] = [
    Route("/cleanup", cleanup_page, methods=["GET"]),
    Route("/cleanup/run", start_run, methods=["POST"]),
]
