"""The agent-side storage client: typed calls, retries, a crash-safe spill buffer and its replay.

Imports ``contracts`` and third-party libraries only, never the worker.
"""

from buffer.client import StorageClient
from buffer.errors import BrokerUnavailable, CallTimeout, SpillFailed, Unroutable, WaitTimeout
from buffer.outcomes import Buffered, CallOptions
from buffer.replay import Replayer, ReplayReport
from buffer.restage import StorageFiles
from buffer.retry import RetryPolicy
from buffer.settings import ClientSettings
from buffer.spill import BufferStatus, FileCopy, SpillBuffer
from buffer.sync import SyncStorageClient
from buffer.thread_calls import CLEAR, Clear
from buffer.upload import StagedFile, Stager, new_artifact_id
from buffer.watching import ChangeWatch
from contracts import errors as _wire
from contracts.errors import *  # noqa: F403  (the whole wire hierarchy, listed once in contracts.errors)

__all__ = [
    "CLEAR",
    "BrokerUnavailable",
    "BufferStatus",
    "Buffered",
    "CallOptions",
    "CallTimeout",
    "ChangeWatch",
    "Clear",
    "ClientSettings",
    "FileCopy",
    "ReplayReport",
    "Replayer",
    "RetryPolicy",
    "SpillBuffer",
    "SpillFailed",
    "StagedFile",
    "Stager",
    "StorageClient",
    "StorageFiles",
    "SyncStorageClient",
    "Unroutable",
    "WaitTimeout",
    "new_artifact_id",
]
__all__ += _wire.__all__
__all__.sort()  # one sorted list for readers of help(buffer)
