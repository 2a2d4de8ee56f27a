"""Wire error codes (google.rpc names) and the one exception hierarchy both sides raise.

The worker raises these from handlers; the client re-raises them from ERROR replies. The code, not the
class, is what travels: ``StorageError.from_wire`` picks the subclass back.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    DATA_LOSS = "DATA_LOSS"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    ABORTED = "ABORTED"


RETRYABLE_CODES: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.UNAVAILABLE,
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.RESOURCE_EXHAUSTED,
        ErrorCode.ABORTED,
    }
)


def is_retryable(code: ErrorCode | str) -> bool:
    """The default retryability of a code (a reply may override it, e.g. an expired command)."""
    return code in RETRYABLE_CODES


class StorageError(Exception):
    """Root of every error that has a wire code. ``details`` is JSON-safe and goes on the wire as is."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    _by_code: ClassVar[dict[ErrorCode, type[StorageError]]] = {}

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.retryable = is_retryable(self.code) if retryable is None else retryable

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The first class of a code is its wire class; a narrower subclass (a client-side timeout) must not
        # take the code over, or every ERROR of that code would come back as the narrower class.
        StorageError._by_code.setdefault(cls.code, cls)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value}: {self.message!r}, details={self.details!r})"

    @staticmethod
    def class_for(code: ErrorCode | str) -> type[StorageError]:
        try:
            return StorageError._by_code[ErrorCode(code)]
        except ValueError:
            return InternalError

    @classmethod
    def from_wire(cls, code: str, message: str, details: dict[str, Any] | None, retryable: bool | None) -> StorageError:
        """Rebuild the typed error from an ERROR reply."""
        return StorageError.class_for(code)(message, details, retryable=retryable)


class InvalidArgument(StorageError):
    code = ErrorCode.INVALID_ARGUMENT


class NotFound(StorageError):
    code = ErrorCode.NOT_FOUND


class AlreadyExists(StorageError):
    code = ErrorCode.ALREADY_EXISTS


class PermissionDenied(StorageError):
    code = ErrorCode.PERMISSION_DENIED


class FailedPrecondition(StorageError):
    code = ErrorCode.FAILED_PRECONDITION


class OutOfRange(StorageError):
    code = ErrorCode.OUT_OF_RANGE


class Unimplemented(StorageError):
    code = ErrorCode.UNIMPLEMENTED


class DataLoss(StorageError):
    code = ErrorCode.DATA_LOSS


class Unauthenticated(StorageError):
    code = ErrorCode.UNAUTHENTICATED


class Cancelled(StorageError):
    code = ErrorCode.CANCELLED


class InternalError(StorageError):
    code = ErrorCode.INTERNAL


class Unavailable(StorageError):
    code = ErrorCode.UNAVAILABLE


class DeadlineExceeded(StorageError):
    code = ErrorCode.DEADLINE_EXCEEDED


class ResourceExhausted(StorageError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class Aborted(StorageError):
    code = ErrorCode.ABORTED


__all__ = [
    "RETRYABLE_CODES",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "ErrorCode",
    "FailedPrecondition",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "StorageError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "is_retryable",
]
