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
