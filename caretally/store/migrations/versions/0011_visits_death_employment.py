"""visits, patients.death_date, practitioners.employment

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 09:30:00

Auditors ask for the encounters behind remote monitoring and care management: whether an
initiating visit happened, whether 99091 fell on an E/M day, whether the practice saw the
patient before monitoring began. Visits are their own records; a date of death stops
billing after it; a practitioner's employment feeds the CY2027 proposal that counts only
employed staff's minutes. Old practitioners read as employees, old patients as alive.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("death_date", sa.Date(), nullable=True))
    with op.batch_alter_table("practitioners", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("employment", sa.String(length=16), nullable=False, server_default="employee")
        )
    op.create_table(
        "visits",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("visit_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("practitioner_id", sa.String(length=64), nullable=False),
        sa.Column("visit_date", sa.Date(), nullable=False),
        sa.Column("code", sa.String(length=8), nullable=False),
        sa.Column("place_of_service", sa.String(length=2), nullable=True),
        sa.Column("telehealth", sa.Boolean(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("org_id", "visit_id", name=op.f("pk_visits")),
    )
    op.create_index("ix_visits_patient", "visits", ["org_id", "patient_id", "visit_date"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_visits_patient", table_name="visits")
    op.drop_table("visits")
    with op.batch_alter_table("practitioners", schema=None) as batch_op:
        batch_op.drop_column("employment")
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_column("death_date")
