"""run summary and decisions digest

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:55:00

A run records what went wrong for some patients (problems) and what an auditor should see
(warnings such as overlapping time), and a digest of its stored decisions so that
``caretally db verify`` can prove they were not altered.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billing_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("summary", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("decisions_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("billing_runs", schema=None) as batch_op:
        batch_op.drop_column("decisions_digest")
        batch_op.drop_column("summary")
