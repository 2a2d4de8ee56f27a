"""Shared base for params and outputs: params refuse unknown fields so a typo is an error, not a no-op."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

DEFAULT_PAGE = 100
MAX_PAGE = 1000

PageLimit = Annotated[int, Field(ge=1, le=MAX_PAGE)]
SEARCH_MIN_CHARS = 3
"""The shortest search: the trigram indexes that serve it need one whole trigram (three characters)."""
SEARCH_MAX_CHARS = 128


def _check_search(value: str) -> str:
    """The search with its surrounding spaces removed, refused when an index could not serve it."""
    stripped = value.strip()
    if len(stripped) < SEARCH_MIN_CHARS:
        raise ValueError(
            f"search must be at least {SEARCH_MIN_CHARS} characters after stripping spaces, got {len(stripped)}: "
            "the trigram index behind it needs one whole trigram"
        )
    if len(stripped) > SEARCH_MAX_CHARS:
        raise ValueError(f"search must be at most {SEARCH_MAX_CHARS} characters, got {len(stripped)}")
    if any(unicodedata.category(char) == "Cc" for char in stripped):
        raise ValueError("search cannot hold control characters: they separate the values it is matched against")
    return stripped


SearchText = Annotated[str, AfterValidator(_check_search)]
"""A case-insensitive substring of a name (``list_threads``, ``list_artifacts``): 3 to 128 characters."""


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Output(BaseModel):
    model_config = ConfigDict(extra="allow")


class PageParams(Params):
    """A listing's page: how many items at most, and where the previous page stopped."""

    limit: PageLimit = DEFAULT_PAGE
    cursor: str | None = Field(default=None, max_length=1024)


class Page(Output):
    """A page of a listing: ``count`` items, and the cursor of the next page (None on the last)."""

    count: int
    next_cursor: str | None = None
