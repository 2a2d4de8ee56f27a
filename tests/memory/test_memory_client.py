"""The agent-side client's memory methods against the real worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from buffer import Buffered, NotFound, PermissionDenied, StorageClient
from service.transport.worker import Worker
from tests.support.client import client_settings


async def test_agent_keeps_and_finds_its_memory_with_the_client(worker: Worker, tmp_path: Path) -> None:
    """put, get, search (all pages), list_namespaces and delete work as typed client calls."""
    buffer_dir = tmp_path / "buffer"
    async with StorageClient(**client_settings(worker, buffer_dir, agent_id="agent.mem")) as storage:
        for i in range(5):
            out = await storage.put_memory(
                ["agent.mem", "clients", f"c{i % 2}"], f"note-{i}", {"text": f"note {i}"}, labels={"kind": "note"}
            )
            assert not isinstance(out, Buffered) and out.version == 1
        again = await storage.put_memory(["agent.mem", "clients", "c0"], "note-0", {"text": "rewritten"})
        assert not isinstance(again, Buffered) and again.version == 2
        item = await storage.get_memory(["agent.mem", "clients", "c0"], "note-0")
        assert item.value == {"text": "rewritten"} and item.owner == "agent.mem"
        found = [i.key async for i in storage.iter_memory(namespace_prefix=["agent.mem"], page_size=2)]
        assert found == ["note-0", "note-4", "note-3", "note-2", "note-1"]
        labelled = await storage.search_memory(namespace_prefix=["agent.mem"], labels={"kind": "note"})
        assert {i.key for i in labelled.items} == {"note-1", "note-2", "note-3", "note-4"}
        names = await storage.list_namespaces(prefix=["agent.mem"], max_depth=3)
        assert names.namespaces == [["agent.mem", "clients", "c0"], ["agent.mem", "clients", "c1"]]
        deleted = await storage.delete_memory(["agent.mem", "clients", "c1"], "note-1")
        assert not isinstance(deleted, Buffered) and deleted.deleted
        with pytest.raises(NotFound):
            await storage.get_memory(["agent.mem", "clients", "c1"], "note-1")
    async with StorageClient(**client_settings(worker, buffer_dir, agent_id="agent.other")) as other:
        with pytest.raises(PermissionDenied):
            await other.get_memory(["agent.mem", "clients", "c0"], "note-0")
