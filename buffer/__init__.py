"""The agent-side storage client: typed calls, retries, a crash-safe spill buffer and its replay.

Imports ``contracts`` and third-party libraries only, never the worker.
"""

from buffer.client import StorageClient
from buffer.errors import (
    Aborted,
    AlreadyExists,
    BrokerUnavailable,
    CallTimeout,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    ErrorCode,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    SpillFailed,
    StorageError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unroutable,
)
from buffer.outcomes import Buffered, CallOptions
from buffer.replay import Replayer, ReplayReport
from buffer.restage import StorageFiles
from buffer.retry import RetryPolicy
from buffer.settings import ClientSettings
from buffer.spill import BufferStatus, FileCopy, SpillBuffer
from buffer.sync import SyncStorageClient
from buffer.upload import StagedFile, Stager, new_artifact_id

__all__ = [
    "Aborted",
    "AlreadyExists",
    "BrokerUnavailable",
    "BufferStatus",
    "Buffered",
    "CallOptions",
    "CallTimeout",
    "Cancelled",
    "ClientSettings",
    "DataLoss",
    "DeadlineExceeded",
    "ErrorCode",
    "FailedPrecondition",
    "FileCopy",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ReplayReport",
    "Replayer",
    "ResourceExhausted",
    "RetryPolicy",
    "SpillBuffer",
    "SpillFailed",
    "StagedFile",
    "Stager",
    "StorageClient",
    "StorageError",
    "StorageFiles",
    "SyncStorageClient",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unroutable",
    "new_artifact_id",
]
