"""a run's warnings stored per patient in run_warnings; its summary keeps their counts

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 18:30:00

``billing_runs.summary`` held every warning of a run (overlapping time): 334,277 of them,
145 MB of JSON, at the benchmark's 100,000 patients, parsed whole (about 750 MB) by
every reader of the run. ``run_warnings`` holds one row per patient with warnings (the
array and its length); the summary keeps ``warnings_total`` and ``warnings_by_code``.
A carried patient's row of a later incremental run refers (``stored_in``) to the row
with the array, as ``run_decisions`` does (0017).

Existing runs are moved one summary at a time, each into rows of its own (no references).
Neither the summary nor the warnings enter a run's digests: ``db verify`` checks the
same bytes before and after.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_runs = sa.table(
    "billing_runs",
    sa.column("run_id", sa.String),
    sa.column("org_id", sa.String),
    sa.column("summary", sa.JSON),
)
_warnings = sa.table(
    "run_warnings",
    sa.column("run_id", sa.String),
    sa.column("org_id", sa.String),
    sa.column("patient_id", sa.String),
    sa.column("warning_count", sa.Integer),
    sa.column("stored_in", sa.String),
    sa.column("warnings", sa.JSON(none_as_null=True)),
)


def _run_ids(conn: sa.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(sa.select(_runs.c.run_id, _runs.c.org_id).order_by(_runs.c.run_id))
    return [(run_id, org_id) for run_id, org_id in rows]


def _summary(conn: sa.Connection, run_id: str) -> dict[str, Any] | None:
    return conn.execute(sa.select(_runs.c.summary).where(_runs.c.run_id == run_id)).scalar_one()


def upgrade() -> None:
    op.create_table(
        "run_warnings",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("warning_count", sa.Integer(), nullable=False),
        sa.Column("stored_in", sa.String(36), nullable=True),
        sa.Column("warnings", sa.JSON(none_as_null=True), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "patient_id"),
    )
    conn = op.get_bind()
    for run_id, org_id in _run_ids(conn):
        summary = _summary(conn, run_id)
        if not isinstance(summary, dict) or "warnings" not in summary:
            continue
        by_patient: dict[str, list[dict[str, Any]]] = {}
        counts: Counter[str] = Counter()
        for w in summary.pop("warnings") or []:
            by_patient.setdefault(w["patient_id"], []).append(
                {"code": w["code"], "message": w["message"], "entry_ids": list(w.get("entry_ids") or [])}
            )
            counts[w["code"]] += 1
        rows = [
            {
                "run_id": run_id,
                "org_id": org_id,
                "patient_id": p,
                "warning_count": len(items),
                "warnings": items,
            }
            for p, items in by_patient.items()
        ]
        for start in range(0, len(rows), 1000):
            conn.execute(sa.insert(_warnings), rows[start : start + 1000])
        summary["warnings_total"] = sum(counts.values())
        summary["warnings_by_code"] = dict(sorted(counts.items()))
        conn.execute(sa.update(_runs).where(_runs.c.run_id == run_id).values(summary=summary))
        del by_patient, rows, summary


def downgrade() -> None:
    conn = op.get_bind()
    source = _warnings.alias("source")
    joined = _warnings.outerjoin(
        source,
        sa.and_(source.c.run_id == _warnings.c.stored_in, source.c.patient_id == _warnings.c.patient_id),
    )
    value = sa.func.coalesce(source.c.warnings, _warnings.c.warnings, type_=sa.JSON(none_as_null=True))
    for run_id, _org_id in _run_ids(conn):
        summary = _summary(conn, run_id)
        if not isinstance(summary, dict) or "warnings_total" not in summary:
            continue
        rows = conn.execute(
            sa.select(_warnings.c.patient_id, value).select_from(joined).where(_warnings.c.run_id == run_id)
        ).all()
        summary.pop("warnings_total")
        summary.pop("warnings_by_code", None)
        summary["warnings"] = [
            {"code": w["code"], "patient_id": patient, "message": w["message"], "entry_ids": w["entry_ids"]}
            for patient, items in sorted(rows, key=lambda row: row[0])
            for w in items or []
        ]
        conn.execute(sa.update(_runs).where(_runs.c.run_id == run_id).values(summary=summary))
    op.drop_table("run_warnings")
