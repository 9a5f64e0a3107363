"""indexes for one-patient month reads

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 10:30:00

A patient-month read evaluated live asks where the organization's data begins
(``MIN(readings.local_date)``) and which entries of the patient's performers overlap
(a performer's entries around each of the patient's). Without these indexes both read the whole
organization: seconds on a 100,000-patient practice, for one patient.
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_readings_org_day", "readings", ["org_id", "local_date"])
    op.create_index(
        "ix_time_performer_start",
        "time_entries",
        ["org_id", "practitioner_id", "started_at", "seconds", "local_date", "patient_id", "entry_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_time_performer_start", table_name="time_entries")
    op.drop_index("ix_readings_org_day", table_name="readings")
