"""run digests that add their parts; claim lines' patient ids in code-point order on PostgreSQL

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 15:20:00

An incremental month run must cost what changed, not the practice. Its digests were
SHA-256 chained over every patient's and every line's part in order, so a run that
carried 99,000 patients still hashed them all. ``billing_runs.digest_scheme`` (2) marks
runs whose digests are sums of their parts (``billing.run.DigestSum``): a run updates its
base's by the few patients it re-evaluates. Runs stored before keep NULL and are verified
the way they were made.

The incremental run places re-evaluated patients' lines between the carried ones by
patient id, in the order the run meets its patients (Python's, code points): on
PostgreSQL ``claim_lines.patient_id`` takes the "C" collation so that its index answers
those comparisons (SQLite compares bytes already).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billing_runs") as batch:
        batch.add_column(sa.Column("digest_scheme", sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "claim_lines",
            "patient_id",
            type_=sa.String(64, collation="C"),
            existing_type=sa.String(64),
            existing_nullable=False,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "claim_lines",
            "patient_id",
            type_=sa.String(64),
            existing_type=sa.String(64, collation="C"),
            existing_nullable=False,
        )
    with op.batch_alter_table("billing_runs") as batch:
        batch.drop_column("digest_scheme")
