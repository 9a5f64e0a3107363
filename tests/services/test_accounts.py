"""Users, tokens, sign-in throttling and sessions, on each database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from caretally.services import accounts
from caretally.services.context import cli_actor
from caretally.services.errors import Conflict, InvalidInput, NotFound, TooManyAttempts, Unauthenticated
from caretally.store import schema
from caretally.store.db import open_database

PASSWORD = "correct horse battery staple"
POLICY = accounts.SessionPolicy(
    secret_key="k7Qm2vX9pL4wR8tN1bZ6cY3hJ5fD0sGa-tests-only",
    idle_timeout=timedelta(minutes=15),
    max_lifetime=timedelta(hours=12),
)
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Engine:
    engine = open_database(db_url)
    accounts.add_org(engine, "north", "North Clinic")
    accounts.add_org(engine, "south", "South Clinic")
    return engine


def _add(
    engine: Engine, email: str = "Nurse@North.example", role: str = "care_staff", org: str = "north"
) -> int:
    return accounts.add_user(engine, cli_actor(org), email=email, password=PASSWORD, role=role).user_id


def test_passwords_are_stored_as_argon2id_and_never_in_clear(engine: Engine) -> None:
    _add(engine)
    with engine.connect() as conn:
        row = conn.execute(select(schema.users)).one()
    assert row.email == "nurse@north.example"
    assert row.password_hash.startswith("$argon2id$")
    assert PASSWORD not in str(tuple(row))


@pytest.mark.parametrize(
    "change, code",
    [
        ({"password": "short one"}, "weak_password"),
        ({"email": "not-an-email"}, "invalid_email"),
        ({"role": "superuser"}, "invalid_role"),
    ],
)
def test_bad_user_input_is_refused(engine: Engine, change: dict[str, str], code: str) -> None:
    fields = {"email": "a@north.example", "password": PASSWORD, "role": "biller", **change}
    with pytest.raises(InvalidInput) as caught:
        accounts.add_user(engine, cli_actor("north"), **fields)
    assert caught.value.code == code


def test_emails_are_unique_across_organizations(engine: Engine) -> None:
    _add(engine)
    with pytest.raises(Conflict):
        _add(engine, email="nurse@north.example", org="south")


def test_tokens_are_stored_as_digests_and_shown_once(engine: Engine) -> None:
    made = accounts.create_token(engine, cli_actor("north"), name="ehr", role="integration")
    assert made.secret.startswith(accounts.TOKEN_PREFIX) and len(made.secret) > 40
    with engine.connect() as conn:
        row = conn.execute(select(schema.api_tokens)).one()
    assert made.secret not in str(tuple(row))
    assert row.digest == accounts.token_digest(made.secret)
    assert made.secret.startswith(row.prefix)
    actor = accounts.authenticate(engine, POLICY, made.secret)
    assert (actor.org_id, actor.role, actor.actor) == (
        "north",
        "integration",
        f"token:{made.record.token_id}",
    )
    with pytest.raises(Conflict):
        accounts.create_token(engine, cli_actor("north"), name="ehr", role="biller")
    accounts.revoke_token(engine, cli_actor("north"), name="ehr")
    with pytest.raises(Unauthenticated):
        accounts.authenticate(engine, POLICY, made.secret)
    with pytest.raises(NotFound):
        accounts.revoke_token(engine, cli_actor("south"), token_id=made.record.token_id)


def test_sign_in_opens_a_session_that_ends_after_inactivity(engine: Engine) -> None:
    _add(engine)
    signed = accounts.sign_in(engine, POLICY, " NURSE@north.example ", PASSWORD, now=T0)
    assert signed.token.startswith(accounts.SESSION_PREFIX)
    assert signed.user.last_signin_at == T0
    actor = accounts.authenticate(engine, POLICY, signed.token, now=T0 + timedelta(minutes=14))
    assert (actor.org_id, actor.role, actor.user_id) == ("north", "care_staff", signed.user.user_id)
    # Activity at +14 min moved last-seen, so +28 min is 14 minutes idle: still valid.
    accounts.authenticate(engine, POLICY, signed.token, now=T0 + timedelta(minutes=28))
    with pytest.raises(Unauthenticated) as caught:
        accounts.authenticate(engine, POLICY, signed.token, now=T0 + timedelta(minutes=44))
    assert caught.value.code == "session_expired"


def test_a_session_ends_at_its_maximum_lifetime_whatever_the_activity(engine: Engine) -> None:
    _add(engine)
    signed = accounts.sign_in(engine, POLICY, "nurse@north.example", PASSWORD, now=T0)
    moment = T0
    while moment < T0 + POLICY.max_lifetime - timedelta(minutes=10):
        moment += timedelta(minutes=10)
        accounts.authenticate(engine, POLICY, signed.token, now=moment)
    with pytest.raises(Unauthenticated):
        accounts.authenticate(engine, POLICY, signed.token, now=T0 + POLICY.max_lifetime)


def test_the_session_key_is_the_servers_secret(engine: Engine) -> None:
    _add(engine)
    signed = accounts.sign_in(engine, POLICY, "nurse@north.example", PASSWORD, now=T0)
    with engine.connect() as conn:
        stored = conn.execute(select(schema.auth_sessions.c.digest)).scalar_one()
    assert signed.token not in stored
    rotated = accounts.SessionPolicy(secret_key="another-key-Zx8Vq3Lm7Rt2Wn5Bk9Yp4Hd6Jf1Gs0")
    with pytest.raises(Unauthenticated):
        accounts.authenticate(engine, rotated, signed.token, now=T0)
    assert accounts.csrf_matches(signed.session, signed.session.csrf_secret)
    assert not accounts.csrf_matches(signed.session, "0" * 64)


def test_repeated_failures_lock_the_account_for_a_growing_while(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    user_id = _add(engine)
    caplog.set_level("WARNING", logger="caretally.auth")
    for _ in range(accounts.FREE_FAILURES - 1):
        with pytest.raises(Unauthenticated):
            accounts.sign_in(engine, POLICY, "nurse@north.example", "wrong password entirely", now=T0)
    with pytest.raises(Unauthenticated):  # the fifth failure locks
        accounts.sign_in(engine, POLICY, "nurse@north.example", "wrong password entirely", now=T0)
    with pytest.raises(TooManyAttempts) as locked:  # even the right password waits
        accounts.sign_in(engine, POLICY, "nurse@north.example", PASSWORD, now=T0 + timedelta(seconds=10))
    assert 0 < locked.value.retry_after <= 30
    after = T0 + accounts.LOCK_BASE + timedelta(seconds=1)
    with pytest.raises(Unauthenticated):  # a sixth failure locks for twice as long
        accounts.sign_in(engine, POLICY, "nurse@north.example", "wrong password entirely", now=after)
    with pytest.raises(TooManyAttempts) as longer:
        accounts.sign_in(engine, POLICY, "nurse@north.example", PASSWORD, now=after + timedelta(seconds=1))
    assert 30 < longer.value.retry_after <= 60
    later = after + 2 * accounts.LOCK_BASE + timedelta(seconds=1)
    accounts.sign_in(engine, POLICY, "nurse@north.example", PASSWORD, now=later)  # success resets
    with engine.connect() as conn:
        failures = conn.execute(select(schema.users.c.failed_signins)).scalar_one()
    assert failures == 0
    logged = caplog.text
    assert f"user {user_id}" in logged and "locked for 30 s" in logged
    assert "nurse@north.example" not in logged and "wrong password" not in logged


def test_unknown_and_inactive_accounts_fail_like_a_wrong_password(engine: Engine) -> None:
    _add(engine)
    with pytest.raises(Unauthenticated) as unknown:
        accounts.sign_in(engine, POLICY, "ghost@north.example", PASSWORD)
    accounts.deactivate_user(engine, cli_actor("north"), "nurse@north.example")
    with pytest.raises(Unauthenticated) as inactive:
        accounts.sign_in(engine, POLICY, "nurse@north.example", PASSWORD)
    assert unknown.value.message == inactive.value.message == accounts.WRONG


def test_deactivation_and_role_changes_apply_to_open_sessions(engine: Engine) -> None:
    admin_id = _add(engine, email="admin@north.example", role="admin")
    nurse_id = _add(engine)
    admin = accounts.authenticate(
        engine, POLICY, accounts.sign_in(engine, POLICY, "admin@north.example", PASSWORD).token
    )
    nurse_token = accounts.sign_in(engine, POLICY, "nurse@north.example", PASSWORD).token
    accounts.update_user(engine, admin, nurse_id, role="biller")
    assert accounts.authenticate(engine, POLICY, nurse_token).role == "biller"
    accounts.update_user(engine, admin, nurse_id, active=False)
    with pytest.raises(Unauthenticated):
        accounts.authenticate(engine, POLICY, nurse_token)
    with pytest.raises(Conflict):
        accounts.update_user(engine, admin, admin_id, active=False)
    with pytest.raises(Conflict):
        accounts.update_user(engine, admin, admin_id, role="auditor")
    south_admin = accounts.authenticate(
        engine,
        POLICY,
        accounts.create_token(engine, cli_actor("south"), name="adm", role="admin").secret,
    )
    with pytest.raises(NotFound):
        accounts.update_user(engine, south_admin, nurse_id, active=True)


def test_sign_out_ends_only_that_session(engine: Engine) -> None:
    _add(engine)
    first = accounts.sign_in(engine, POLICY, "nurse@north.example", PASSWORD).token
    second = accounts.sign_in(engine, POLICY, "nurse@north.example", PASSWORD).token
    assert accounts.end_session(engine, accounts.authenticate(engine, POLICY, first))
    with pytest.raises(Unauthenticated):
        accounts.authenticate(engine, POLICY, first)
    accounts.authenticate(engine, POLICY, second)
