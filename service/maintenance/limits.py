"""How old a file or row must be before cleanup touches it: long enough that nothing still at work is hit."""

from datetime import timedelta

TEMP_MAX_AGE = timedelta(hours=1)
"""An upload in temp/ older than this was abandoned by its agent."""
ORPHAN_FILE_MIN_AGE = timedelta(hours=24)
"""A file under artifacts/ with no row is moved to orphans/ only after this (a registration may be in flight)."""
ORPHAN_KEEP = timedelta(days=7)
"""How long orphans/ keeps a file before it is deleted for good (time to notice a mistake)."""
STALE_UPLOADING_AGE = timedelta(hours=1)
"""A row left ``uploading`` this long belongs to an upload that will never finish."""
