"""a run's decisions row may point at the run that stores the patient's decisions

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 12:15:00

``bill --incremental`` carries most patients' decisions unchanged from the run it builds
on. Copying each carried patient's JSON document (17 KB a patient) was the largest cost
of such a run; now its row names the run whose row holds the text (``stored_in``) and
leaves ``decisions`` NULL. Every reader resolves the reference (``billing.run.decision_rows``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_decisions") as batch:
        batch.add_column(sa.Column("stored_in", sa.String(36), nullable=True))
        batch.alter_column("decisions", existing_type=sa.JSON(), nullable=True)


def downgrade() -> None:
    # Copy every referenced document back into the rows that point at it first.
    op.execute(
        "UPDATE run_decisions SET decisions = (SELECT s.decisions FROM run_decisions s "
        "WHERE s.run_id = run_decisions.stored_in AND s.patient_id = run_decisions.patient_id) "
        "WHERE stored_in IS NOT NULL"
    )
    with op.batch_alter_table("run_decisions") as batch:
        batch.alter_column("decisions", existing_type=sa.JSON(), nullable=False)
        batch.drop_column("stored_in")
