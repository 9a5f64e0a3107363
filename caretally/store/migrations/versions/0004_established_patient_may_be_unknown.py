"""established patient may be unknown

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:00:00

An enrollment that does not say whether the patient is established is no longer stored
as "established": the rule-year option ``established_patient_when_missing`` decides, and
the decision names the gap.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.alter_column("established_patient", existing_type=sa.Boolean(), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE enrollments SET established_patient = TRUE WHERE established_patient IS NULL")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.alter_column("established_patient", existing_type=sa.Boolean(), nullable=False)
