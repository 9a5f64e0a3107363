"""The two floors the billing run is measured against: the raw facts and nothing else.

Floor (a) asks the database that holds the data for the two quantities every device and
time code rests on: distinct patient-local days of readings per patient and 30-day
period (periods counted from each RPM/RTM enrollment's start) and whole minutes per
patient and calendar month. Floor (b) asks DuckDB the same over the bundle's CSV files
loaded into memory. Both read the same window the billing run reads (29 days before the
month through its last day), so the ratio of the run to a floor is the price of
everything the run does beyond counting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

LOOKBACK = timedelta(days=29)


@dataclass(frozen=True)
class Window:
    first: date  # first day whose readings may fall in a period ending in the month
    month_start: date
    month_end: date


def window_for(month_start: date, month_end: date) -> Window:
    return Window(month_start - LOOKBACK, month_start, month_end)


def _days_sql(dialect: str) -> str:
    gap = (
        "CAST(julianday(r.local_date) - julianday(e.start_date) AS INTEGER)"
        if dialect == "sqlite"
        else "(r.local_date - e.start_date)"
    )
    return f"""
        SELECT e.enrollment_id, r.patient_id, {gap} / 30 AS period, COUNT(DISTINCT r.local_date) AS days
        FROM readings r
        JOIN enrollments e
          ON e.org_id = r.org_id AND e.patient_id = r.patient_id
         AND e.program IN ('RPM', 'RTM')
         AND r.local_date >= e.start_date
         AND (e.end_date IS NULL OR r.local_date <= e.end_date)
        WHERE r.org_id = :org AND r.local_date >= :first AND r.local_date <= :last
        GROUP BY e.enrollment_id, r.patient_id, {gap} / 30
    """


MINUTES_SQL = """
    SELECT patient_id, SUM(seconds) / 60 AS minutes
    FROM time_entries
    WHERE org_id = :org AND local_date >= :start AND local_date <= :last
    GROUP BY patient_id
"""


def sql_floor(engine: Engine, org_id: str, window: Window) -> int:
    """Runs floor (a) and fetches every result row (the run needs its facts in Python too)."""
    dialect = engine.dialect.name
    with engine.connect() as conn:
        days = conn.execute(
            text(_days_sql(dialect)),
            {"org": org_id, "first": window.first, "last": window.month_end},
        ).all()
        minutes = conn.execute(
            text(MINUTES_SQL), {"org": org_id, "start": window.month_start, "last": window.month_end}
        ).all()
    return len(days) + len(minutes)


def duckdb_load(bundle: Path) -> Any:
    """An in-memory DuckDB holding the bundle, with each reading's patient-local date derived.

    The local date is computed here, as the importer computes it, so the timed query
    does only what floor (a) does.
    """
    import duckdb

    con = duckdb.connect()
    con.execute(
        f"""
        CREATE TABLE patients AS
        SELECT patient_id, timezone
        FROM read_csv('{bundle / "patients.csv"}', header = true, all_varchar = true)
        """
    )
    con.execute(
        f"""
        CREATE TABLE enrollments AS
        SELECT enrollment_id, patient_id, program, CAST(start_date AS DATE) AS start_date,
               CAST(NULLIF(end_date, '') AS DATE) AS end_date
        FROM read_csv('{bundle / "enrollments.csv"}', header = true, all_varchar = true)
        """
    )
    con.execute(
        f"""
        CREATE TABLE readings AS
        SELECT r.patient_id,
               CAST(timezone(p.timezone, CAST(r.measured_at AS TIMESTAMPTZ)) AS DATE) AS local_date
        FROM read_csv('{bundle / "readings.csv"}', header = true, all_varchar = true) r
        JOIN patients p USING (patient_id)
        """
    )
    con.execute(
        f"""
        CREATE TABLE time_entries AS
        SELECT t.patient_id, CAST(t.seconds AS INTEGER) AS seconds,
               CAST(timezone(p.timezone, CAST(t.started_at AS TIMESTAMPTZ)) AS DATE) AS local_date
        FROM read_csv('{bundle / "time_entries.csv"}', header = true, all_varchar = true) t
        JOIN patients p USING (patient_id)
        """
    )
    return con


def duckdb_floor(con: Any, window: Window) -> int:
    days = con.execute(
        """
        SELECT e.enrollment_id, r.patient_id, (r.local_date - e.start_date) // 30 AS period,
               COUNT(DISTINCT r.local_date) AS days
        FROM readings r
        JOIN enrollments e
          ON e.patient_id = r.patient_id AND e.program IN ('RPM', 'RTM')
         AND r.local_date >= e.start_date AND (e.end_date IS NULL OR r.local_date <= e.end_date)
        WHERE r.local_date BETWEEN ? AND ?
        GROUP BY ALL
        """,
        [window.first, window.month_end],
    ).fetchall()
    minutes = con.execute(
        """
        SELECT patient_id, SUM(seconds) // 60 AS minutes
        FROM time_entries WHERE local_date BETWEEN ? AND ?
        GROUP BY patient_id
        """,
        [window.month_start, window.month_end],
    ).fetchall()
    return len(days) + len(minutes)
