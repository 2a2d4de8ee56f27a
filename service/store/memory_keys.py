"""How a memory namespace becomes an indexable string, and an item a primary key.

A namespace ``["agent.7", "facts"]`` is stored as the path ``agent.7/facts/``: each part escaped so the
separator cannot occur inside it (``%`` → ``%25``, ``/`` → ``%2F``), each followed by the separator. The
trailing separator makes "every namespace under this prefix" a plain range on that column
(``path >= 'agent.7/' AND path < 'agent.70'``): an index range scan, never a ``LIKE`` with the caller's
wildcards, and ``agent.7`` never matches ``agent.70``. The column compares bytewise (``COLLATE "C"`` on
PostgreSQL; SQLite's default), which this ordering relies on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from urllib.parse import unquote

SEPARATOR = "/"
_UPPER = chr(ord(SEPARATOR) + 1)
MAX_PATH_BYTES = 1024
"""Longest encoded namespace: keeps every index entry well under PostgreSQL's btree row limit."""


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace(SEPARATOR, "%2F")


def _unescape(part: str) -> str:
    return unquote(part)  # every "%" in a stored part starts one of our two escapes


def encode(namespace: Sequence[str]) -> str:
    """The stored path of a namespace (or of a prefix; the empty prefix is ``""``)."""
    return "".join(_escape(part) + SEPARATOR for part in namespace)


def decode(path: str) -> list[str]:
    return [_unescape(part) for part in path.split(SEPARATOR)[:-1]]


def upper_bound(path: str) -> str | None:
    """The smallest path above every path that starts with ``path``; None for the empty prefix (no bound)."""
    return path[:-1] + _UPPER if path else None


def truncate(path: str, depth: int) -> str:
    """The path of the first ``depth`` parts of ``path``."""
    parts = path.split(SEPARATOR)[:-1]
    return "".join(part + SEPARATOR for part in parts[:depth])


def item_id(path: str, key: str) -> str:
    """The primary key of (namespace, key): a sha256, so any key length fits a fixed-width indexed column."""
    return hashlib.sha256(json.dumps([path, key], ensure_ascii=False).encode()).hexdigest()
