"""a run's warnings stored with each patient's decisions row; its summary keeps their counts

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 18:30:00

``billing_runs.summary`` held every warning of a run (overlapping time): 334,277 of them,
145 MB of JSON, at the benchmark's 100,000 patients, parsed whole (about 750 MB) by
every reader of the run. ``run_decisions.warnings`` now holds one patient's warnings,
beside the decisions they were made from; the summary keeps ``warnings_total`` and
``warnings_by_code``. A row that refers to another run's row (``stored_in``, 0017)
leaves it NULL and is read through the reference, so an incremental run carries its
patients' warnings without copying them.

Existing runs are moved one summary at a time, each warning into its own run's row of
the patient (references included, so nothing depends on the referred run's warnings).
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

_runs = sa.table("billing_runs", sa.column("run_id", sa.String), sa.column("summary", sa.JSON))
_decisions = sa.table(
    "run_decisions",
    sa.column("run_id", sa.String),
    sa.column("patient_id", sa.String),
    sa.column("stored_in", sa.String),
    sa.column("warnings", sa.JSON(none_as_null=True)),
)


def _run_ids(conn: sa.Connection) -> list[str]:
    return list(conn.execute(sa.select(_runs.c.run_id).order_by(_runs.c.run_id)).scalars())


def _summary(conn: sa.Connection, run_id: str) -> dict[str, Any] | None:
    return conn.execute(sa.select(_runs.c.summary).where(_runs.c.run_id == run_id)).scalar_one()


def upgrade() -> None:
    with op.batch_alter_table("run_decisions") as batch:
        batch.add_column(sa.Column("warnings", sa.JSON(none_as_null=True), nullable=True))
    conn = op.get_bind()
    for run_id in _run_ids(conn):
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
        if by_patient:
            conn.execute(
                sa.update(_decisions)
                .where(
                    _decisions.c.run_id == sa.bindparam("r"),
                    _decisions.c.patient_id == sa.bindparam("p"),
                )
                .values(warnings=sa.bindparam("w")),
                [{"r": run_id, "p": p, "w": items} for p, items in by_patient.items()],
            )
        summary["warnings_total"] = sum(counts.values())
        summary["warnings_by_code"] = dict(sorted(counts.items()))
        conn.execute(sa.update(_runs).where(_runs.c.run_id == run_id).values(summary=summary))
        del by_patient, summary


def downgrade() -> None:
    conn = op.get_bind()
    source = _decisions.alias("source")
    joined = _decisions.outerjoin(
        source,
        sa.and_(source.c.run_id == _decisions.c.stored_in, source.c.patient_id == _decisions.c.patient_id),
    )
    value = sa.func.coalesce(_decisions.c.warnings, source.c.warnings, type_=sa.JSON(none_as_null=True))
    for run_id in _run_ids(conn):
        summary = _summary(conn, run_id)
        if not isinstance(summary, dict) or "warnings_total" not in summary:
            continue
        rows = conn.execute(
            sa.select(_decisions.c.patient_id, value)
            .select_from(joined)
            .where(_decisions.c.run_id == run_id, value.is_not(None))
        ).all()
        summary.pop("warnings_total")
        summary.pop("warnings_by_code", None)
        summary["warnings"] = [
            {"code": w["code"], "patient_id": patient, "message": w["message"], "entry_ids": w["entry_ids"]}
            for patient, items in sorted(rows, key=lambda row: row[0])
            for w in items or []
        ]
        conn.execute(sa.update(_runs).where(_runs.c.run_id == run_id).values(summary=summary))
    with op.batch_alter_table("run_decisions") as batch:
        batch.drop_column("warnings")
