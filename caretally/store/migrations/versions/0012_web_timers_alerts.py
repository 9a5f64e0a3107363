"""web app: server-kept timers, user ↔ practitioner links, alert thresholds and acknowledgements

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 09:40:00

The care-staff pages keep a timer per user and patient on the server (a reload or a second
tab must not lose it), log time as the practitioner a user is linked to, and raise alerts
from readings outside the practice's thresholds until a nurse acknowledges them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import caretally.store.schema

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UTC_TIME = caretally.store.schema.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "staff_timers",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("elapsed_seconds", sa.Integer(), nullable=False),
        sa.Column("running_since", UTC_TIME(), nullable=True),
        sa.Column("first_started_at", UTC_TIME(), nullable=False),
        sa.Column("updated_at", UTC_TIME(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], name=op.f("fk_staff_timers_user_id_users")),
        sa.PrimaryKeyConstraint("org_id", "user_id", "patient_id", name=op.f("pk_staff_timers")),
    )
    op.create_table(
        "user_practitioners",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("practitioner_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_user_practitioners_user_id_users")
        ),
        sa.PrimaryKeyConstraint("org_id", "user_id", name=op.f("pk_user_practitioners")),
    )
    op.create_table(
        "alert_thresholds",
        sa.Column("threshold_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("program", sa.String(length=8), nullable=False),
        sa.Column("measure", sa.String(length=64), nullable=False),
        sa.Column("at_or_above", sa.Numeric(precision=12, scale=3), nullable=True),
        sa.Column("at_or_below", sa.Numeric(precision=12, scale=3), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", UTC_TIME(), nullable=False),
        sa.Column("removed_at", UTC_TIME(), nullable=True),
        sa.PrimaryKeyConstraint("threshold_id", name=op.f("pk_alert_thresholds")),
    )
    with op.batch_alter_table("alert_thresholds", schema=None) as batch_op:
        batch_op.create_index("ix_alert_thresholds_org", ["org_id", "program"], unique=False)
    op.create_table(
        "alert_acknowledgements",
        sa.Column("ack_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("reading_key", sa.String(length=200), nullable=False),
        sa.Column("threshold_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=120), nullable=False),
        sa.Column("acknowledged_at", UTC_TIME(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("entry_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("ack_id", name=op.f("pk_alert_acknowledgements")),
    )
    with op.batch_alter_table("alert_acknowledgements", schema=None) as batch_op:
        batch_op.create_index(
            "uq_alert_acknowledgements", ["org_id", "reading_key", "threshold_id"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("alert_acknowledgements", schema=None) as batch_op:
        batch_op.drop_index("uq_alert_acknowledgements")
    op.drop_table("alert_acknowledgements")
    with op.batch_alter_table("alert_thresholds", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_thresholds_org")
    op.drop_table("alert_thresholds")
    op.drop_table("user_practitioners")
    op.drop_table("staff_timers")
