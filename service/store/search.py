"""Search by name: the normalised text a row is searched by, and the condition a ``search`` adds to a listing.

Every thread and artifact keeps ``search_text``: its searchable values (a thread's top-level metadata strings
and numbers, an artifact's label values), each NFKC-normalised and case-folded by Python
(``str.casefold``), joined by ``SEPARATOR``. The search is folded the same way and matched as a literal
substring (``LIKE '%…%'`` with ``%``, ``_`` and ``\\`` escaped), so case-insensitivity never depends on the
database's locale and "ромашка" finds "Цветы «РОМАШКА»". A search holds no control character, so it never
matches across two values.

The index (revision 0010): PostgreSQL's ``pg_trgm`` GIN index on ``search_text`` serves the ``LIKE``
itself. On SQLite an FTS5 table with the trigram tokenizer mirrors ``search_text`` (kept by triggers in
the row's own transaction); a listing first counts up to ``SQLITE_RARE_ROWS`` of its matches there. Fewer:
it reads just those rows (by rowid) and sorts them. More: the match is common, and the ordinary newest-first
walk checks ``search_text`` on the rows it passes, finding a page within a few thousand rows. Either way the
row's own ``search_text LIKE`` decides, so the FTS table only ever narrows the rows looked at.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Mapping

from sqlalchemy import BindParameter, ColumnElement, Table, bindparam, literal_column, text
from sqlalchemy.ext.asyncio import AsyncConnection

SEPARATOR = "\x1f"
"""Between two values in ``search_text``: a control character, which a search cannot hold."""
VALUE_CHARS = 1000
"""Characters of one value that are searchable (a long value is indexed by its first ones)."""
SQLITE_RARE_ROWS = 500
"""On SQLite, a search matching fewer rows than this reads those rows; more, it walks the listing's order.

Counting more costs the FTS5 probe more (a name in 2,000 of 1,000,000 threads: 12 ms to count them all), while
a walk for a page of 20 passes at most 20 * rows / 500 rows (40,000 index entries at 1M: about 8 ms)."""
FTS_TABLES = {"threads": "threads_search", "artifacts": "artifacts_search"}
"""The SQLite FTS5 table that indexes each table's ``search_text`` (revision 0010), keyed by its rowid."""


def fold(value: str) -> str:
    """The form values and searches are compared in: NFKC, then Unicode case folding."""
    return unicodedata.normalize("NFKC", value).casefold()


def value_text(value: object) -> str | None:
    """The searchable text of one value: strings and numbers (an INN saved as a number is found by its
    digits); None for booleans, nulls, objects and lists, which are not names."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() and abs(value) < 2**63 else repr(value)
    if isinstance(value, str):
        return value
    return None


def search_text(values: Iterable[object]) -> str:
    """What a row is searched by: its searchable values, folded, each cut to ``VALUE_CHARS``, separated."""
    parts = []
    for value in values:
        if (raw := value_text(value)) is not None and (folded := fold(raw[:VALUE_CHARS])):
            parts.append(folded.replace(SEPARATOR, " "))
    return SEPARATOR.join(parts)


def metadata_text(metadata: Mapping[str, object]) -> str:
    return search_text(metadata.values())


def like_pattern(search: str) -> str:
    """``%folded search%`` with LIKE's wildcards and the escape character taken literally."""
    folded = fold(search)
    escaped = folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fts_phrase(search: str) -> str:
    """The search as one FTS5 phrase: with the trigram tokenizer, the rows holding it as a substring."""
    return '"' + fold(search).replace('"', '""') + '"'


def matches(table: Table, pattern: ColumnElement[str] | str) -> ColumnElement[bool]:
    """The row's ``search_text`` holds the search (``like_pattern``): decided on the row, on both databases."""
    return table.c.search_text.like(pattern, escape="\\")


async def sqlite_candidates(conn: AsyncConnection, table: Table, search: str) -> list[int] | None:
    """On SQLite, the rowids of the rows whose indexed text holds ``search``, when fewer than
    ``SQLITE_RARE_ROWS``; None when there are more (the listing walks its order instead)."""
    fts = FTS_TABLES[table.name]
    query = text(f"SELECT rowid FROM {fts} WHERE {fts} MATCH :phrase LIMIT :most")
    rowids = list((await conn.execute(query, {"phrase": fts_phrase(search), "most": SQLITE_RARE_ROWS})).scalars())
    return None if len(rowids) >= SQLITE_RARE_ROWS else rowids


def among(table: Table, rowids: list[int] | None = None) -> ColumnElement[bool]:
    """The rows of ``table`` with these rowids (SQLite), as one parameter list (``search_rowids``, given
    here or at execution)."""
    listed: BindParameter[int] = (
        bindparam("search_rowids", expanding=True)
        if rowids is None
        else bindparam("search_rowids", rowids, expanding=True)
    )
    return literal_column(f"{table.name}.rowid").in_(listed)
