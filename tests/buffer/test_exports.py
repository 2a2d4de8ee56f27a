"""The package's public surface: everything in ``__all__`` exists, and every action has a typed method."""

from __future__ import annotations

import inspect

import buffer
from buffer import StorageClient, SyncStorageClient
from contracts import ACTIONS, SPILLABLE_ACTIONS


def test_all_names_are_importable_and_sorted() -> None:
    """``from buffer import *`` gives every documented name, listed once each and in sorted order (so a reader
    finds a name, and a merge adds it in one obvious place)."""
    assert [name for name in buffer.__all__ if not hasattr(buffer, name)] == []
    assert list(buffer.__all__) == sorted(set(buffer.__all__))
    public = {name for name, value in vars(buffer).items() if not name.startswith("_") and not inspect.ismodule(value)}
    assert public <= set(buffer.__all__), f"exported but not in __all__: {public - set(buffer.__all__)}"


def test_every_action_has_a_method_on_both_clients() -> None:
    """An agent finds one method per contract action on the async and on the sync client."""
    for action in ACTIONS:
        assert inspect.iscoroutinefunction(getattr(StorageClient, action)), action
        assert callable(getattr(SyncStorageClient, action)), action


def test_spillable_writes_say_so_in_their_return_type() -> None:
    """Exactly the writes the buffer keeps are annotated as possibly returning ``Buffered``."""
    buffered = {
        name for name in ACTIONS if "Buffered" in str(inspect.signature(getattr(StorageClient, name)).return_annotation)
    }
    assert buffered == set(SPILLABLE_ACTIONS)
