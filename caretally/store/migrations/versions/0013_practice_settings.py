"""practice settings per organization

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 10:00:00

The admin's practice settings (issue 12): the 837P identity as practice-file TOML, the
pricing locality and the payer overlays, one row per organization.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import caretally.store.schema

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "practice_settings",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("identity_toml", sa.Text(), nullable=True),
        sa.Column("locality", sa.String(length=32), nullable=True),
        sa.Column("payer_overlays", sa.JSON(), nullable=True),
        sa.Column("updated_by", sa.String(length=120), nullable=False),
        sa.Column("updated_at", caretally.store.schema.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.org_id"], name=op.f("fk_practice_settings_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_practice_settings")),
    )


def downgrade() -> None:
    op.drop_table("practice_settings")
