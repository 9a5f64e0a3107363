"""the worklist kept as state

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 12:10:00

The worklist of an organization for one day and rule book, kept as rows with their rank
keys indexed, so its first page is a query (``caretally.worklist_state``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_ident = sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql")


def upgrade() -> None:
    from caretally.store.schema import UtcDateTime

    op.create_table(
        "worklist_states",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("state_id", sa.String(length=32), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("rules_key", sa.String(length=64), nullable=False),
        sa.Column("overlays", sa.JSON(), nullable=False),
        sa.Column("engine_version", sa.String(length=64), nullable=False),
        sa.Column("history_key", sa.String(length=64), nullable=False),
        sa.Column("touches_through", sa.Integer(), nullable=False),
        sa.Column("refreshed_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "state_id", name=op.f("pk_worklist_states")),
    )
    op.create_table(
        "worklist_rows",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("state_id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", _ident, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("enrollment_id", _ident, nullable=False),
        sa.Column("program", sa.String(length=8), nullable=False),
        sa.Column("practitioner_id", sa.String(length=64), nullable=True),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("r_vpm", sa.Integer(), nullable=False),
        sa.Column("r_end", sa.Date(), nullable=False),
        sa.Column("r_value", sa.Integer(), nullable=False),
        sa.Column("g_vpm", sa.Integer(), nullable=True),
        sa.Column("g_end", sa.Date(), nullable=True),
        sa.Column("g_value", sa.Integer(), nullable=True),
        sa.Column("s_vpm", sa.Integer(), nullable=True),
        sa.Column("s_end", sa.Date(), nullable=True),
        sa.Column("s_value", sa.Integer(), nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "state_id", "patient_id", "seq", name=op.f("pk_worklist_rows")),
    )
    rank = ["r_vpm", "r_end", "r_value", "patient_id", "enrollment_id", "seq"]
    op.create_index(
        "ix_worklist_rows_open_rank",
        "worklist_rows",
        ["org_id", "state_id", "is_open", *rank],
    )
    op.create_index(
        "ix_worklist_rows_rank",
        "worklist_rows",
        ["org_id", "state_id", *rank],
    )
    op.create_index(
        "ix_worklist_rows_patient_rank",
        "worklist_rows",
        ["org_id", "state_id", "is_open", "g_vpm", "g_end", "g_value", "patient_id"],
    )
    op.create_index(
        "ix_worklist_rows_staff_rank",
        "worklist_rows",
        ["org_id", "state_id", "practitioner_id", "is_open", "s_vpm", "s_end", "s_value", "patient_id"],
    )


def downgrade() -> None:
    op.drop_table("worklist_rows")
    op.drop_table("worklist_states")
