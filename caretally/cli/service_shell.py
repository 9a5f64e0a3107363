"""What the account and audit commands share: the CLI actor and service errors as CLI errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from caretally.cli.common import UserError


@contextmanager
def service_errors() -> Iterator[None]:
    """A ``ServiceError`` becomes the CLI's one-line error (exit 1: the request was refused)."""
    from caretally.services.errors import ServiceError

    try:
        yield
    except ServiceError as exc:
        raise UserError(exc.message, exc.hint, 1) from None
