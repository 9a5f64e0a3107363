"""enrollment qmb and prior authorization

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09 09:00:00

APCM level 3 (G0558) is for Qualified Medicare Beneficiaries, and some payers' coverage
policies bill a program only under a prior authorization: both are facts of the episode,
recorded on the enrollment so that each period is judged by the status of its own
episode. All four columns are optional; old rows read as "not recorded".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("qmb", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("authorization_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("authorization_start", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("authorization_end", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_column("authorization_end")
        batch_op.drop_column("authorization_start")
        batch_op.drop_column("authorization_id")
        batch_op.drop_column("qmb")
