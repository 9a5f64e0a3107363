"""service accounts, credentials, sessions and the audit trail

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 08:00:00

The service signs people and programs in (users with Argon2 password hashes, API tokens
stored as digests, server-side sessions) and records every access to PHI in a hash-chained,
append-only trail. Triggers refuse UPDATE and DELETE on the trail's tables on both
databases, so a mistake in code cannot rewrite history; someone who drops the triggers
is still caught by ``caretally audit verify``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import caretally.store.schema

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

APPEND_ONLY = ("audit_events", "audit_event_patients")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("failed_signins", sa.Integer(), nullable=False),
        sa.Column("locked_until", caretally.store.schema.UtcDateTime(), nullable=True),
        sa.Column("last_signin_at", caretally.store.schema.UtcDateTime(), nullable=True),
        sa.Column("created_at", caretally.store.schema.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.org_id"], name=op.f("fk_users_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_users")),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index("ix_users_org", ["org_id"], unique=False)
        batch_op.create_index("uq_users_email", ["email"], unique=True)

    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", caretally.store.schema.UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("last_used_at", caretally.store.schema.UtcDateTime(), nullable=True),
        sa.Column("revoked_at", caretally.store.schema.UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.org_id"], name=op.f("fk_api_tokens_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("token_id", name=op.f("pk_api_tokens")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_api_tokens_org", ["org_id", "name"], unique=False)
        batch_op.create_index("uq_api_tokens_digest", ["digest"], unique=True)

    op.create_table(
        "auth_sessions",
        sa.Column("session_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("csrf_secret", sa.String(length=64), nullable=False),
        sa.Column("created_at", caretally.store.schema.UtcDateTime(), nullable=False),
        sa.Column("last_seen_at", caretally.store.schema.UtcDateTime(), nullable=False),
        sa.Column("expires_at", caretally.store.schema.UtcDateTime(), nullable=False),
        sa.Column("revoked_at", caretally.store.schema.UtcDateTime(), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], name=op.f("fk_auth_sessions_user_id_users")),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_auth_sessions")),
    )
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_auth_sessions_user", ["user_id"], unique=False)
        batch_op.create_index("uq_auth_sessions_digest", ["digest"], unique=True)

    op.create_table(
        "audit_chain_heads",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.org_id"], name=op.f("fk_audit_chain_heads_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_audit_chain_heads")),
    )

    op.create_table(
        "audit_events",
        sa.Column("event_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("occurred_at", caretally.store.schema.UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("actor_name", sa.String(length=254), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=300), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("event_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_time", ["org_id", "occurred_at"], unique=False)
        batch_op.create_index("uq_audit_events_seq", ["org_id", "seq"], unique=True)

    op.create_table(
        "audit_event_patients",
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "patient_id", name=op.f("pk_audit_event_patients")),
    )
    with op.batch_alter_table("audit_event_patients", schema=None) as batch_op:
        batch_op.create_index("ix_audit_event_patients_patient", ["org_id", "patient_id"], unique=False)

    _append_only_triggers()


def _append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION caretally_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'the audit trail is append-only (% on %)', TG_OP, TG_TABLE_NAME; END $$"
        )
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION caretally_audit_append_only()"
            )
    elif dialect == "sqlite":
        for table in APPEND_ONLY:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only ({verb} on {table})'); END"
                )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS caretally_audit_append_only()")
    elif dialect == "sqlite":
        for table in APPEND_ONLY:
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
    with op.batch_alter_table("audit_event_patients", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_event_patients_patient")
    op.drop_table("audit_event_patients")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("uq_audit_events_seq")
        batch_op.drop_index("ix_audit_events_time")
    op.drop_table("audit_events")
    op.drop_table("audit_chain_heads")
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.drop_index("uq_auth_sessions_digest")
        batch_op.drop_index("ix_auth_sessions_user")
    op.drop_table("auth_sessions")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index("uq_api_tokens_digest")
        batch_op.drop_index("ix_api_tokens_org")
    op.drop_table("api_tokens")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("uq_users_email")
        batch_op.drop_index("ix_users_org")
    op.drop_table("users")
