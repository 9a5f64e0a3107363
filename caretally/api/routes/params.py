"""Path and query parameters shared by the routes, with the limits the OpenAPI document shows."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

#: An external id as the practice gave it: up to 64 characters, no control character or '/'.
ID_PATTERN = r"^[^\x00-\x1f\x7f/]{1,64}$"
MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"

PatientId = Annotated[str, Path(pattern=ID_PATTERN, max_length=64, description="The practice's patient id")]
RunId = Annotated[str, Path(pattern=ID_PATTERN, max_length=64, description="A run id (`runs list`)")]
Month = Annotated[
    str, Path(pattern=MONTH_PATTERN, description="Calendar month, YYYY-MM", examples=["2026-03"])
]
Limit = Annotated[int, Query(ge=1, le=500, description="Items per page")]
Cursor = Annotated[
    str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_-]*$", description="next_cursor of the last page")
]
