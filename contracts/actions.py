"""The action table: for each action its params and output models, and whether it writes or needs admin."""

from __future__ import annotations

from dataclasses import dataclass

from contracts import artifacts as a
from contracts import changes as ch
from contracts import lineage as lin
from contracts import maintenance as m
from contracts import memory as mem
from contracts import threads as t
from contracts._base import Output, Params


@dataclass(frozen=True, slots=True)
class ActionSpec:
    name: str
    params: type[Params]
    output: type[Output]
    writes: bool = False
    admin: bool = False
    spillable: bool = False
    """A write that the client may keep in its local buffer when the worker cannot be reached."""


ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec("register_artifact", a.RegisterArtifactParams, a.RegisterArtifactOutput, True, spillable=True),
        ActionSpec("get_artifact", a.GetArtifactParams, a.GetArtifactOutput),
        ActionSpec("list_artifacts", a.ListArtifactsParams, a.ListArtifactsOutput),
        ActionSpec("get_artifact_uri", a.GetArtifactUriParams, a.GetArtifactUriOutput),
        ActionSpec("get_lineage", lin.GetLineageParams, lin.GetLineageOutput),
        ActionSpec("delete_artifact", a.DeleteArtifactParams, a.DeleteArtifactOutput, True, admin=True),
        ActionSpec("restore_artifact", a.RestoreArtifactParams, a.RestoreArtifactOutput, True, admin=True),
        ActionSpec("save_thread", t.SaveThreadParams, t.SaveThreadOutput, True, spillable=True),
        ActionSpec("get_thread", t.GetThreadParams, t.GetThreadOutput),
        ActionSpec("list_threads", t.ListThreadsParams, t.ListThreadsOutput),
        ActionSpec("delete_thread", t.DeleteThreadParams, t.DeleteThreadOutput, True, spillable=True),
        ActionSpec("get_thread_info", t.GetThreadInfoParams, t.GetThreadInfoOutput),
        ActionSpec("restore_thread", t.RestoreThreadParams, t.RestoreThreadOutput, True),
        ActionSpec("put_memory", mem.PutMemoryParams, mem.PutMemoryOutput, True, spillable=True),
        ActionSpec("get_memory", mem.GetMemoryParams, mem.MemoryItem),
        ActionSpec("search_memory", mem.SearchMemoryParams, mem.SearchMemoryOutput),
        ActionSpec("list_namespaces", mem.ListNamespacesParams, mem.ListNamespacesOutput),
        ActionSpec("delete_memory", mem.DeleteMemoryParams, mem.DeleteMemoryOutput, True, spillable=True),
        ActionSpec("changes_since", ch.ChangesSinceParams, ch.ChangesSinceOutput),
        ActionSpec("cleanup", m.CleanupParams, m.CleanupOutput, True, admin=True),
        ActionSpec("get_stats", m.GetStatsParams, m.GetStatsOutput),
        ActionSpec("ping", m.PingParams, m.PingOutput),
    )
}

SPILLABLE_ACTIONS: frozenset[str] = frozenset(name for name, spec in ACTIONS.items() if spec.spillable)
