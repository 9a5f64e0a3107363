"""Is the service able to answer? The database must answer and carry the current schema."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine, text

from caretally.services.errors import Unavailable


@lru_cache(maxsize=1)
def _head() -> str | None:
    """The newest migration shipped with this code (read from disk once per process)."""
    from caretally.store.db import head_revision, make_engine

    return head_revision(make_engine("sqlite://"))


def check(engine: Engine) -> None:
    """Raises ``Unavailable`` (never a driver error) when the database cannot serve requests."""
    from caretally.store.db import current_revision

    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current = current_revision(engine)
    except Exception as exc:  # any driver failure means the same thing to a health check
        raise Unavailable(
            f"the database does not answer ({type(exc).__name__})", code="database_unavailable"
        ) from None
    if current != _head():
        raise Unavailable(
            f"the database schema is at {current}, not the current revision",
            hint="run `caretally db upgrade`",
            code="schema_out_of_date",
        )
