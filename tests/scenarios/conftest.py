"""Collects every ``tests/scenarios/**/*.yaml`` case as a test, once per database.

Each case becomes ``<file>::<sentence>[sqlite]`` and ``[postgres]``. A session keeps one
database per backend; every case imports into its own organization, which is how the
product keeps tenants apart anyway.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import PG_ENV, skip_or_fail
from tests.scenarios.harness import Case, Outcome, describe, describe_line, load_cases, run_case

HERE = Path(__file__).parent


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    # overlays/ holds payer overlays that scenarios name, not scenarios.
    if (
        file_path.suffix == ".yaml"
        and HERE in file_path.parents
        and HERE / "overlays" not in file_path.parents
    ):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        for case in load_cases(self.path):
            for backend in ("sqlite", "postgres"):
                item = ScenarioItem.from_parent(
                    self, name=f"{case.name} [{backend}]", case=case, backend=backend
                )
                if backend == "postgres":
                    item.add_marker(pytest.mark.postgres)
                if case.spec.get("skip"):
                    item.add_marker(pytest.mark.skip(reason=str(case.spec["skip"])))
                yield item


class ScenarioItem(pytest.Item):
    def __init__(self, *, case: Case, backend: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.backend = backend

    def runtest(self) -> None:
        url = _database(self.session, self.backend)
        outcome = run_case(self.case, url)
        if outcome.failures:
            raise ScenarioFailure(outcome)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailure):
            outcome = excinfo.value.outcome
            lines = [f"scenario: {self.case.name}", *(f"  - {f}" for f in outcome.failures)]
            lines.append("decisions (of the last step compared):")
            for d in outcome.decisions:
                lines.append(f"  {describe(d)}")
                for r in d["reasons"]:
                    lines.append(f"      [{'ok' if r['passed'] else 'NO'}] {r['rule_id']}: {r['message']}")
            if outcome.lines:
                lines.append("claim lines:")
                lines += [f"  {describe_line(line)}" for line in outcome.lines]
            return "\n".join(lines)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario: {self.case.name} [{self.backend}]"


class ScenarioFailure(AssertionError):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__("\n".join(outcome.failures))
        self.outcome = outcome


_DATABASES: dict[str, str] = {}


def _database(session: pytest.Session, backend: str) -> str:
    """One database per backend per session, created on first use and dropped at exit."""
    if backend in _DATABASES:
        return _DATABASES[backend]
    if backend == "sqlite":
        tmp = session.config._tmp_path_factory.mktemp("scenarios")  # type: ignore[attr-defined]
        _DATABASES[backend] = f"sqlite:///{tmp / 'scenarios.db'}"
        return _DATABASES[backend]
    admin = os.environ.get(PG_ENV)
    if not admin:
        skip_or_fail(f"PostgreSQL scenarios need {PG_ENV} (CI sets it; see README)")
    name = f"ct_sc_{uuid.uuid4().hex[:10]}"
    engine = create_engine(str(admin), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    _DATABASES[backend] = make_url(str(admin)).set(database=name).render_as_string(hide_password=False)
    session.config.add_cleanup(lambda: _drop(str(admin), name))
    return _DATABASES[backend]


def _drop(admin: str, name: str) -> None:
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    engine.dispose()
