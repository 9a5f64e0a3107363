"""month-close jobs

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 09:30:00

A month run started over HTTP runs outside the request, on a task queue consumer. The
``jobs`` row is what a client polls: state, progress, the run it made, and a one-line
error. The queue itself (huey, SQLite file or Redis) carries only the job id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import caretally.store.schema

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("done", sa.Integer(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=120), nullable=True),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", caretally.store.schema.UtcDateTime(), nullable=False),
        sa.Column("started_at", caretally.store.schema.UtcDateTime(), nullable=True),
        sa.Column("finished_at", caretally.store.schema.UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.org_id"], name=op.f("fk_jobs_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_org_created", ["org_id", "created_at"], unique=False)
        batch_op.create_index("ix_jobs_state", ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_state")
        batch_op.drop_index("ix_jobs_org_created")
    op.drop_table("jobs")
