"""The action table of this worker: every domain's handlers beside their contract entries.

A handler is ``async (params, HandlerContext) -> output`` (or ``Committed[output]`` when it commits a
write); no AMQP in sight. ``service.core.actions.check`` verifies the table at start-up.
"""

from __future__ import annotations

from service.core.actions import ActionTable, table
from service.handlers import artifact_tombstones, artifacts, changes, lineage, maintenance, memory, system, threads

ACTIONS: ActionTable = table(
    artifacts.register_artifact,
    artifacts.get_artifact,
    artifacts.list_artifacts,
    artifacts.get_artifact_uri,
    lineage.get_lineage,
    artifact_tombstones.delete_artifact,
    artifact_tombstones.restore_artifact,
    threads.save_thread,
    threads.get_thread,
    threads.list_threads,
    threads.delete_thread,
    threads.get_thread_info,
    threads.restore_thread,
    memory.put_memory,
    memory.get_memory,
    memory.search_memory,
    memory.list_namespaces,
    memory.delete_memory,
    changes.changes_since,
    maintenance.cleanup,
    system.get_stats,
    system.ping,
)
"""Every served action, named after its handler function: the contract's name for it."""

__all__ = ["ACTIONS"]
