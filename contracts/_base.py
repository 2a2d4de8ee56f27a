"""Shared base for params and outputs: params refuse unknown fields so a typo is an error, not a no-op."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PAGE = 100
MAX_PAGE = 1000

PageLimit = Annotated[int, Field(ge=1, le=MAX_PAGE)]


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
