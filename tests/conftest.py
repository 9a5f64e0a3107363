"""Database fixtures shared by every test package.

``db_url`` runs a test once on a fresh SQLite file and once on a fresh PostgreSQL
database. PostgreSQL tests skip with a reason when ``CARETALLY_TEST_POSTGRES_URL`` is
unset (a laptop); when it is set (CI) an unreachable server is a failure, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_ENV = "CARETALLY_TEST_POSTGRES_URL"
REQUIRE_ALL_ENV = "CARETALLY_TEST_REQUIRE_ALL"
RULES_DIR_ENV = "CARETALLY_RULES_DIR"


def pytest_configure(config: pytest.Config) -> None:
    """Imported rule layers (``caretally rules import-rvu``) are read from the rules folder,
    ``./caretally-rules`` by default: point every test (and every process a test starts)
    at an empty one, so a layer imported on this machine never changes what tests see.
    Tests that import layers give their own folder; this one is never created."""
    os.environ[RULES_DIR_ENV] = str(Path(config.rootpath) / ".no-imported-rule-layers" / str(os.getpid()))


def skip_or_fail(reason: str) -> None:
    """Skip on a laptop; in CI (``CARETALLY_TEST_REQUIRE_ALL=1``) a missing service fails."""
    if os.environ.get(REQUIRE_ALL_ENV) == "1":
        pytest.fail(f"required in CI but unavailable: {reason}")
    pytest.skip(reason)


def postgres_admin_url() -> str | None:
    return os.environ.get(PG_ENV) or None


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'caretally.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    admin = postgres_admin_url()
    if admin is None:
        skip_or_fail(f"PostgreSQL tests need {PG_ENV} (CI sets it; see README)")
    name = f"ct_{uuid.uuid4().hex[:12]}"
    admin_engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin_engine.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin_engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database URL: SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")
