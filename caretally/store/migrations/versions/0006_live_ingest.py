"""live ingest: readings without a device, who changed a record

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 06:00:00

A FHIR Observation without ``Observation.device`` is a value the patient or a clinician
typed in: it is stored as a manual reading with no device, which the facts query (an
inner join on devices) never counts as a device day. Corrections made through the API
(an amended time entry, an updated reading) record who made them in ``audit_changes``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("readings", schema=None) as batch_op:
        batch_op.alter_column("device_id", existing_type=sa.String(length=64), nullable=True)
    with op.batch_alter_table("audit_changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor", sa.String(length=200), nullable=True))


def downgrade() -> None:
    bind = op.get_bind()
    orphans = bind.execute(sa.text("SELECT COUNT(*) FROM readings WHERE device_id IS NULL")).scalar()
    if orphans:
        raise RuntimeError(
            f"{orphans} manual readings have no device; retract them before downgrading below 0006"
        )
    with op.batch_alter_table("audit_changes", schema=None) as batch_op:
        batch_op.drop_column("actor")
    with op.batch_alter_table("readings", schema=None) as batch_op:
        batch_op.alter_column("device_id", existing_type=sa.String(length=64), nullable=False)
