"""The retention grammar: ``infinite``, a short duration (``30d``, ``12h``) or an ISO 8601 duration."""

from __future__ import annotations

import re
from datetime import timedelta

INFINITE = "infinite"

_SHORT = re.compile(r"^(\d{1,9})([smhdw])$")
_ISO = re.compile(
    r"^P(?!$)(?:(\d{1,6})Y)?(?:(\d{1,6})M)?(?:(\d{1,6})W)?(?:(\d{1,9})D)?"
    r"(?:T(?=\d)(?:(\d{1,9})H)?(?:(\d{1,9})M)?(?:(\d{1,9}(?:\.\d+)?)S)?)?$"
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX = timedelta(days=365 * 1000)


def parse_retention(value: str) -> timedelta | None:
    """Return how long an artifact is kept, or None for ``infinite``; ValueError on anything else.

    Calendar units are read as fixed lengths (a year is 365 days, a month 30): retention is a
    policy, not a calendar date.
    """
    text = value.strip()
    if text.lower() == INFINITE:
        return None
    if short := _SHORT.match(text):
        delta = timedelta(seconds=int(short.group(1)) * _UNIT_SECONDS[short.group(2)])
    elif iso := _ISO.match(text.upper()):
        years, months, weeks, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in iso.groups())
        delta = timedelta(
            days=years * 365 + months * 30 + weeks * 7 + days,
            hours=hours,
            minutes=minutes,
            seconds=seconds,
        )
    else:
        raise ValueError(f"retention {value!r} is not 'infinite', a duration like '30d' or an ISO 8601 duration")
    if delta <= timedelta(0):
        raise ValueError(f"retention {value!r} must be longer than zero")
    if delta > _MAX:
        raise ValueError(f"retention {value!r} is longer than 1000 years; use 'infinite'")
    return delta
