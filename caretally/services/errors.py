"""Failures a service reports to its caller, whatever the caller is.

Each kind maps to one HTTP status and one CLI exit status, so the API and the CLI never
decide by message text. ``problems`` carries every individual fault (a bad row, a bad
parameter) so one answer lists them all.
"""

from __future__ import annotations

from collections.abc import Sequence

from caretally.errors import Problem


class ServiceError(Exception):
    """Base: ``code`` is stable and machine-readable; ``message`` is one line for a person."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        code: str | None = None,
        problems: Sequence[Problem] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code
        self.problems = list(problems)


class InvalidInput(ServiceError):
    status = 422
    code = "invalid_input"


class NotFound(ServiceError):
    """Missing, or belonging to another organization: the two are indistinguishable on purpose."""

    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class Unauthenticated(ServiceError):
    status = 401
    code = "unauthenticated"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class TooManyAttempts(ServiceError):
    """Sign-in refused for a while after repeated failures; ``retry_after`` in seconds."""

    status = 429
    code = "too_many_attempts"

    def __init__(self, message: str, retry_after: int, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"
