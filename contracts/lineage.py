"""``get_lineage``: where an artifact came from and what was made from it, as nodes and edges.

Two kinds of edge: ``input`` (from an artifact named in ``context.input_artifacts`` to the artifact made from
it) and ``supersedes`` (from a version to its successor). A node the requester may not read, or that is no
longer there (expired, deleted, never registered), is only its id with ``hidden: true``: the graph shows that
something is there without telling what, and the walk does not go on through it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field

from contracts._base import Output, Params
from contracts.manifest import ArtifactId, ArtifactManifest

MAX_LINEAGE_DEPTH = 10
MAX_LINEAGE_NODES = 500
"""A walk stops (``truncated``) once it has this many nodes, or earlier when the reply would outgrow
``STORAGE_MAX_REPLY_BYTES``."""


class LineageDirection(StrEnum):
    UPSTREAM = "upstream"
    """Inputs and predecessors, and theirs, up to ``depth`` steps."""
    DOWNSTREAM = "downstream"
    """What was made from it and its successors, and theirs."""
    BOTH = "both"
    """Both walks from the artifact (not the other direction of what they reach)."""


class EdgeKind(StrEnum):
    INPUT = "input"
    SUPERSEDES = "supersedes"


class GetLineageParams(Params):
    artifact_id: ArtifactId
    direction: LineageDirection = LineageDirection.BOTH
    depth: int = Field(default=3, ge=1, le=MAX_LINEAGE_DEPTH)


class HiddenNode(Output):
    """An artifact on the graph that the requester may not read, or that is gone: its id and nothing else."""

    id: str
    hidden: Literal[True] = True


class LineageEdge(Output):
    """``from`` → ``to``: the input to what was made from it, or a version to its successor."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True, validate_by_alias=True)

    from_: str = Field(alias="from")
    to: str
    kind: EdgeKind


class GetLineageOutput(Output):
    artifact_id: str
    nodes: list[ArtifactManifest | HiddenNode]
    """The artifact itself first, then the others in the order the walk reached them."""
    edges: list[LineageEdge]
    truncated: bool = False
    """True when the walk stopped at the node limit or the reply size before ``depth``."""
