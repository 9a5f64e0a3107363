"""device hardware id

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 06:00:00

Readings that arrive live (a Tenovi webhook, a FHIR Observation) name the physical unit by
its vendor serial, not by the practice's device id; storing that serial lets ingest find
the device and its patient.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hardware_id", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_devices_hardware", ["org_id", "hardware_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_hardware")
        batch_op.drop_column("hardware_id")
