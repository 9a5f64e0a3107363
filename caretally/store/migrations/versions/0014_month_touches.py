"""month touches and run touch marks

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 10:40:00

Which patient-months each ingest changed, and what each run had seen of them, so an
incremental month run (``bill --incremental``) re-evaluates only the changed patients.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "month_touches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_month_touches")),
    )
    op.create_index(op.f("ix_month_touches_org_id_id"), "month_touches", ["org_id", "id"], unique=False)
    op.create_table(
        "run_touch_marks",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("touches_through", sa.Integer(), nullable=False),
        sa.Column("history_key", sa.String(length=64), nullable=False),
        sa.Column("decision_parts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_touch_marks")),
    )


def downgrade() -> None:
    op.drop_table("run_touch_marks")
    op.drop_index(op.f("ix_month_touches_org_id_id"), table_name="month_touches")
    op.drop_table("month_touches")
