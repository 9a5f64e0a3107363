"""Opaque cursors for paged lists.

A cursor is the position after the last item shown (a keyset, not an offset, where the
list has a stable order), written as URL-safe base64 of a small JSON array so clients
cannot mistake it for an id. A cursor the server did not make is an ``InvalidInput``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from caretally.services.errors import InvalidInput

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode(kind: str, *position: Any) -> str:
    text = json.dumps([kind, *position], separators=(",", ":"), default=str)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(cursor: str | None, kind: str, arity: int) -> list[Any] | None:
    """The position in ``cursor`` (``arity`` values), ``None`` for no cursor."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode())
    except (ValueError, UnicodeDecodeError):
        value = None
    if not (isinstance(value, list) and len(value) == arity + 1 and value[0] == kind):
        raise InvalidInput(
            "the cursor is not one this server gave for this list",
            hint="start again without a cursor",
            code="invalid_cursor",
        )
    return value[1:]


def clamp(limit: int | None) -> int:
    return DEFAULT_LIMIT if limit is None else max(1, min(int(limit), MAX_LIMIT))
