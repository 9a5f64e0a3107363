"""webhook secrets

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 09:40:00

A device webhook (Tenovi) authenticates with a shared secret that an admin sets per
organization; only its SHA-256 digest is stored, and the digest is what tells the
server whose readings a webhook request carries.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import caretally.store.schema

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_secrets",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", caretally.store.schema.UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.org_id"], name=op.f("fk_webhook_secrets_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("org_id", "source", name=op.f("pk_webhook_secrets")),
    )
    with op.batch_alter_table("webhook_secrets", schema=None) as batch_op:
        batch_op.create_index("uq_webhook_secrets_source_digest", ["source", "digest"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("webhook_secrets", schema=None) as batch_op:
        batch_op.drop_index("uq_webhook_secrets_source_digest")
    op.drop_table("webhook_secrets")
