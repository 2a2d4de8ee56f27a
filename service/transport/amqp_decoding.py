"""No message property may kill the worker's AMQP connection, whatever an agent put in it.

pamqp decodes a message's properties when its content header frame arrives. A value it cannot decode (a
``timestamp`` past the year 9999, which ``datetime`` cannot hold, in the properties or inside the headers
table) raises there; aiormq then closes the connection, reconnects, receives the same unacked message again
and dies again: one message from any agent would wedge the worker for good. Decoded here instead:

- a timestamp no ``datetime`` holds reads as absent;
- any other property that cannot be decoded ends the decoding there: it and the properties after it read
  as absent (their bytes cannot be found without it), and the message still reaches the pipeline, which
  answers and settles it. A property lost this way only ever takes something from its own sender (its
  ``reply_to``, its broker-validated ``user_id``), never grants anything.
"""

from __future__ import annotations

import datetime
import logging

from pamqp import base, commands, common, decode

log = logging.getLogger(__name__)

_TIMESTAMP_BYTES = 8
_pamqp_timestamp = decode.timestamp


def _tolerant_timestamp(value: bytes) -> tuple[int, datetime.datetime | None]:
    """pamqp's decoding, but a value no ``datetime`` holds is None."""
    try:
        return _pamqp_timestamp(value)
    except (ValueError, OverflowError, OSError):
        if len(value) < _TIMESTAMP_BYTES:
            raise  # truncated data: a broken frame, not a hostile value
        common.Struct.timestamp.unpack(value[:_TIMESTAMP_BYTES])
        return _TIMESTAMP_BYTES, None


def _tolerant_unmarshal(self: base.BasicProperties, flags: int, data: bytes) -> None:
    """``Basic.Properties.unmarshal``, stopping at the first property that cannot be decoded."""
    for name in self.__slots__:
        if not flags & self.flags[name]:
            continue
        data_type: str = getattr(self.__class__, "_" + name)  # the AMQP type name, e.g. "shortstr"
        try:
            consumed, value = decode.by_type(data, data_type)
        except Exception:
            log.warning("a message's %s property could not be decoded: it and the ones after it are ignored", name)
            return
        setattr(self, name, value)
        data = data[consumed:]


def install() -> None:
    """Put the tolerant decoders in place of pamqp's (idempotent; the worker calls it before connecting)."""
    decode.METHODS["timestamp"] = _tolerant_timestamp
    decode.TABLE_MAPPING[b"T"] = _tolerant_timestamp
    # A deliberate patch of pamqp's class (same signature); mypy flags any assignment to a method.
    commands.Basic.Properties.unmarshal = _tolerant_unmarshal  # type: ignore[method-assign]
