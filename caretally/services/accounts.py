"""Organizations, users, API tokens, sign-in and sessions.

Secrets are never stored: passwords as Argon2id hashes (pwdlib), API tokens as SHA-256
digests (a 256-bit random token needs no slow hash), session ids as HMAC-SHA256 digests
keyed by the server's secret key (rotating the key signs everyone out). A credential is
shown once, when it is made.

Sign-in failures are counted per account: after ``FREE_FAILURES`` in a row the account
is locked for ``LOCK_BASE``, doubling with each further failure up to ``LOCK_MAX``; a
success resets the count. Failures are logged by user id and count, never by the
address typed or the password.

Sessions are rows, so the web app's cookie sessions and the API's bearer sessions share
one store: a random id held by the client, a digest in the table, a last-seen time for
inactivity expiry, an absolute end, and a per-session CSRF secret for HTML forms.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import Connection, Engine, insert, select, update

from caretally.services import audit
from caretally.services.context import Actor
from caretally.services.errors import Conflict, InvalidInput, NotFound, TooManyAttempts, Unauthenticated
from caretally.services.permissions import Role
from caretally.store import schema

log = logging.getLogger("caretally.auth")

TOKEN_PREFIX = "ctk_"  # API tokens
SESSION_PREFIX = "cts_"  # sign-in sessions (bearer today, cookie later)
PREFIX_SHOWN = 12  # characters of a token kept for lists: prefix + 8 random
MIN_PASSWORD = 15  # NIST SP 800-63B-4 for a password that is the only factor
MAX_PASSWORD = 256  # Argon2 would hash more, but nobody types it; refuse instead of burn CPU
FREE_FAILURES = 5
LOCK_BASE = timedelta(seconds=30)
LOCK_MAX = timedelta(minutes=15)
TOUCH_EVERY = timedelta(seconds=60)  # last-seen / last-used writes at most this often

_ORG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
WRONG = "the email or password is wrong, or the account is inactive"

_users = schema.users
_tokens = schema.api_tokens
_sessions = schema.auth_sessions
_orgs = schema.organizations


@lru_cache(maxsize=1)
def password_hasher() -> PasswordHash:
    return PasswordHash((Argon2Hasher(),))


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash to verify against when no account matches, so timing does not reveal that."""
    return password_hasher().hash(secrets.token_urlsafe(24))


def _now() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------------------
# Records (what services hand back; no secret is ever in one)
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrgRecord:
    org_id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class UserRecord:
    user_id: int
    org_id: str
    email: str
    display_name: str
    role: str
    active: bool
    created_at: datetime
    last_signin_at: datetime | None
    locked_until: datetime | None


@dataclass(frozen=True)
class TokenRecord:
    token_id: int
    org_id: str
    name: str
    role: str
    prefix: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class NewToken:
    """A token just made: ``secret`` is shown once and never again."""

    secret: str
    record: TokenRecord


@dataclass(frozen=True)
class SessionPolicy:
    """How sessions are keyed and how long they live (from the server's settings)."""

    secret_key: str
    idle_timeout: timedelta = timedelta(minutes=15)
    max_lifetime: timedelta = timedelta(hours=12)


@dataclass(frozen=True)
class SessionRecord:
    session_id: int
    org_id: str
    user_id: int
    kind: str
    csrf_secret: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class SignedIn:
    token: str  # the session's bearer credential, shown once
    session: SessionRecord
    user: UserRecord
    idle_timeout: timedelta


def _user(row: Any) -> UserRecord:
    return UserRecord(
        row.user_id,
        row.org_id,
        row.email,
        row.display_name,
        row.role,
        bool(row.active),
        row.created_at,
        row.last_signin_at,
        row.locked_until,
    )


def _token(row: Any) -> TokenRecord:
    return TokenRecord(
        row.token_id,
        row.org_id,
        row.name,
        row.role,
        row.prefix,
        row.created_at,
        row.created_by,
        row.last_used_at,
        row.revoked_at,
    )


def _session(row: Any) -> SessionRecord:
    return SessionRecord(
        row.session_id,
        row.org_id,
        row.user_id,
        row.kind,
        row.csrf_secret,
        row.created_at,
        row.last_seen_at,
        row.expires_at,
    )


# ----------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------


def check_org_id(org_id: str) -> str:
    if not _ORG_ID.fullmatch(org_id):
        raise InvalidInput(
            f"organization id {org_id!r} is not usable",
            hint="use 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            code="invalid_org_id",
        )
    return org_id


def normal_email(email: str) -> str:
    text = email.strip().lower()
    if len(text) > 254 or not _EMAIL.fullmatch(text):
        raise InvalidInput(f"{email!r} is not an email address", code="invalid_email")
    return text


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInput(
            f"role {role!r} is not one of {', '.join(r.value for r in Role)}", code="invalid_role"
        ) from None


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(
            f"the password must have at least {MIN_PASSWORD} characters",
            hint="a few unrelated words make a long password that is easy to type",
            code="weak_password",
        )
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"the password must have at most {MAX_PASSWORD} characters", code="long_password")
    return password


def _check_name(name: str, what: str, limit: int) -> str:
    text = name.strip()
    if not text or len(text) > limit or any(ord(c) < 32 for c in text):
        raise InvalidInput(f"{what} must be 1–{limit} printable characters", code=f"invalid_{what}")
    return text


# ----------------------------------------------------------------------------------------
# Organizations
# ----------------------------------------------------------------------------------------


def add_org(engine: Engine, org_id: str, name: str) -> OrgRecord:
    check_org_id(org_id)
    name = _check_name(name, "name", 200)
    with engine.begin() as conn:
        if conn.execute(select(_orgs.c.org_id).where(_orgs.c.org_id == org_id)).first() is not None:
            raise Conflict(f"organization {org_id} exists already", code="org_exists")
        when = _now()
        conn.execute(insert(_orgs).values(org_id=org_id, name=name, created_at=when))
    return OrgRecord(org_id, name, when)


def list_orgs(engine: Engine) -> list[OrgRecord]:
    with engine.connect() as conn:
        rows = conn.execute(select(_orgs).order_by(_orgs.c.org_id)).all()
    return [OrgRecord(r.org_id, r.name, r.created_at) for r in rows]


def require_org(conn: Connection, org_id: str) -> None:
    if conn.execute(select(_orgs.c.org_id).where(_orgs.c.org_id == org_id)).first() is None:
        raise NotFound(
            f"there is no organization {org_id}",
            hint=f"create it with `caretally orgs add {org_id} --name NAME`",
            code="no_such_org",
        )


# ----------------------------------------------------------------------------------------
# Users
# ----------------------------------------------------------------------------------------


def add_user(
    engine: Engine,
    actor: Actor,
    *,
    email: str,
    password: str,
    role: str,
    display_name: str | None = None,
) -> UserRecord:
    """A new active user of the actor's organization (the actor is an admin or the CLI)."""
    address = normal_email(email)
    chosen = check_role(role)
    check_password(password)
    shown = _check_name(display_name or address.split("@", 1)[0], "display_name", 200)
    hashed = password_hasher().hash(password)
    with audit.audited(engine, actor, "user.create", "users") as (conn, note):
        require_org(conn, actor.org_id)
        if conn.execute(select(_users.c.user_id).where(_users.c.email == address)).first() is not None:
            raise Conflict("a user with this email exists already", code="email_taken")
        when = _now()
        user_id = conn.execute(
            insert(_users)
            .values(
                org_id=actor.org_id,
                email=address,
                display_name=shown,
                role=chosen.value,
                active=True,
                password_hash=hashed,
                failed_signins=0,
                created_at=when,
            )
            .returning(_users.c.user_id)
        ).scalar_one()
        note.detail = {"user_id": user_id, "role": chosen.value}
    return UserRecord(user_id, actor.org_id, address, shown, chosen.value, True, when, None, None)


def list_users(engine: Engine, org_id: str) -> list[UserRecord]:
    with engine.connect() as conn:
        rows = conn.execute(select(_users).where(_users.c.org_id == org_id).order_by(_users.c.user_id)).all()
    return [_user(r) for r in rows]


def get_user(engine: Engine, org_id: str, user_id: int) -> UserRecord:
    with engine.connect() as conn:
        row = conn.execute(
            select(_users).where(_users.c.org_id == org_id, _users.c.user_id == user_id)
        ).first()
    if row is None:
        raise NotFound("no such user", code="no_such_user")
    return _user(row)


def update_user(
    engine: Engine,
    actor: Actor,
    user_id: int,
    *,
    role: str | None = None,
    active: bool | None = None,
    display_name: str | None = None,
) -> UserRecord:
    """Change a user's role, name or active flag; deactivating ends their sessions.

    Admins cannot deactivate or demote themselves, so an organization is never left
    without the account that could undo the change.
    """
    chosen = check_role(role) if role is not None else None
    shown = _check_name(display_name, "display_name", 200) if display_name is not None else None
    with audit.audited(engine, actor, "user.update", f"users/{user_id}") as (conn, note):
        row = conn.execute(
            select(_users).where(_users.c.org_id == actor.org_id, _users.c.user_id == user_id)
        ).first()
        if row is None:
            raise NotFound("no such user", code="no_such_user")
        if actor.user_id == user_id and (
            active is False or (chosen is not None and chosen is not Role.ADMIN)
        ):
            raise Conflict(
                "you cannot deactivate your own account or take away your own admin role",
                hint="ask another admin",
                code="self_demotion",
            )
        changes: dict[str, Any] = {}
        if chosen is not None:
            changes["role"] = chosen.value
        if active is not None:
            changes["active"] = active
        if shown is not None:
            changes["display_name"] = shown
        if changes:
            conn.execute(update(_users).where(_users.c.user_id == user_id).values(**changes))
        if active is False:
            _end_sessions(conn, user_id)
        note.detail = {"user_id": user_id, **{k: v for k, v in changes.items() if k != "display_name"}}
        row = conn.execute(select(_users).where(_users.c.user_id == user_id)).one()
    return _user(row)


def deactivate_user(engine: Engine, actor: Actor, email: str) -> UserRecord:
    address = normal_email(email)
    with engine.connect() as conn:
        user_id = conn.execute(
            select(_users.c.user_id).where(_users.c.org_id == actor.org_id, _users.c.email == address)
        ).scalar()
    if user_id is None:
        raise NotFound(f"no user {address} in organization {actor.org_id}", code="no_such_user")
    return update_user(engine, actor, user_id, active=False)


def _end_sessions(conn: Connection, user_id: int) -> None:
    conn.execute(
        update(_sessions)
        .where(_sessions.c.user_id == user_id, _sessions.c.revoked_at.is_(None))
        .values(revoked_at=_now())
    )


# ----------------------------------------------------------------------------------------
# API tokens
# ----------------------------------------------------------------------------------------


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(engine: Engine, actor: Actor, *, name: str, role: str) -> NewToken:
    """A new API token with its own role; the secret is in the answer and nowhere else."""
    label = _check_name(name, "name", 100)
    chosen = check_role(role)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with audit.audited(engine, actor, "token.create", "tokens") as (conn, note):
        require_org(conn, actor.org_id)
        taken = conn.execute(
            select(_tokens.c.token_id).where(
                _tokens.c.org_id == actor.org_id, _tokens.c.name == label, _tokens.c.revoked_at.is_(None)
            )
        ).first()
        if taken is not None:
            raise Conflict(f"an active token named {label!r} exists already", code="token_name_taken")
        when = _now()
        values = {
            "org_id": actor.org_id,
            "name": label,
            "role": chosen.value,
            "prefix": secret[:PREFIX_SHOWN],
            "digest": token_digest(secret),
            "created_at": when,
            "created_by": actor.actor,
        }
        token_id = conn.execute(insert(_tokens).values(**values).returning(_tokens.c.token_id)).scalar_one()
        note.detail = {"token_id": token_id, "role": chosen.value}
    record = TokenRecord(
        token_id, actor.org_id, label, chosen.value, values["prefix"], when, actor.actor, None, None
    )
    return NewToken(secret, record)


def list_tokens(engine: Engine, org_id: str) -> list[TokenRecord]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(_tokens).where(_tokens.c.org_id == org_id).order_by(_tokens.c.token_id)
        ).all()
    return [_token(r) for r in rows]


def revoke_token(
    engine: Engine, actor: Actor, *, token_id: int | None = None, name: str | None = None
) -> TokenRecord:
    """Revoke by id, or the active token of that name; a revoked token stays listed."""
    t = _tokens
    where = [t.c.org_id == actor.org_id]
    if token_id is not None:
        where.append(t.c.token_id == token_id)
        shown = f"tokens/{token_id}"
    elif name is not None:
        where.extend([t.c.name == name, t.c.revoked_at.is_(None)])
        shown = "tokens"
    else:
        raise InvalidInput("name the token to revoke by id or by name", code="token_unnamed")
    with audit.audited(engine, actor, "token.revoke", shown) as (conn, note):
        row = conn.execute(select(t).where(*where)).first()
        if row is None:
            raise NotFound("no such token" + ("" if name is None else " (active, with that name)"))
        if row.revoked_at is not None:
            raise Conflict(f"token {row.token_id} is revoked already", code="token_revoked")
        conn.execute(update(t).where(t.c.token_id == row.token_id).values(revoked_at=_now()))
        note.detail = {"token_id": row.token_id}
        row = conn.execute(select(t).where(t.c.token_id == row.token_id)).one()
    return _token(row)


# ----------------------------------------------------------------------------------------
# Signing in and sessions
# ----------------------------------------------------------------------------------------


def session_digest(policy: SessionPolicy, secret: str) -> str:
    return hmac.new(policy.secret_key.encode(), secret.encode(), hashlib.sha256).hexdigest()


def _lock_for(failures: int) -> timedelta | None:
    if failures < FREE_FAILURES:
        return None
    return min(LOCK_BASE * (2 ** (failures - FREE_FAILURES)), LOCK_MAX)


def sign_in(
    engine: Engine,
    policy: SessionPolicy,
    email: str,
    password: str,
    *,
    kind: str = "bearer",
    client_address: str | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
) -> SignedIn:
    """Check email and password; on success open a session and return its credential.

    Wrong address, wrong password and inactive account give the same answer. A locked
    account answers ``TooManyAttempts`` without looking at the password.
    """
    when = now or _now()
    try:
        address = normal_email(email)
    except InvalidInput:
        address = None
    with engine.connect() as conn:
        row = conn.execute(select(_users).where(_users.c.email == address)).first() if address else None
    if row is None:
        password_hasher().verify(password[:MAX_PASSWORD], _dummy_hash())
        log.warning("sign-in failed: no account has the address given")
        raise Unauthenticated(WRONG, code="sign_in_failed")
    actor = Actor(
        org_id=row.org_id,
        actor=f"user:{row.user_id}",
        role=None,
        name=row.email,
        request_id=request_id,
        client_address=client_address,
        user_id=row.user_id,
    )
    if row.locked_until is not None and row.locked_until > when:
        wait = max(1, int((row.locked_until - when).total_seconds()) + 1)
        log.warning("sign-in refused: user %s is locked for %s more second(s)", row.user_id, wait)
        audit.record(engine, actor, "auth.sign_in", f"users/{row.user_id}", outcome=audit.DENIED)
        raise TooManyAttempts(
            f"too many failed sign-ins for this account; try again in {wait} seconds",
            retry_after=wait,
            code="account_locked",
        )
    good = len(password) <= MAX_PASSWORD and password_hasher().verify(password, row.password_hash)
    if not good or not row.active:
        _count_failure(engine, actor, row.user_id, when, inactive=bool(good and not row.active))
        raise Unauthenticated(WRONG, code="sign_in_failed")
    secret = SESSION_PREFIX + secrets.token_urlsafe(32)
    with audit.audited(engine, actor, "auth.sign_in", f"users/{row.user_id}") as (conn, _note):
        conn.execute(
            update(_users)
            .where(_users.c.user_id == row.user_id)
            .values(failed_signins=0, locked_until=None, last_signin_at=when)
        )
        values = {
            "digest": session_digest(policy, secret),
            "org_id": row.org_id,
            "user_id": row.user_id,
            "kind": kind,
            "csrf_secret": secrets.token_hex(32),
            "created_at": when,
            "last_seen_at": when,
            "expires_at": when + policy.max_lifetime,
            "client_address": (client_address or "")[:64] or None,
        }
        session_id = conn.execute(
            insert(_sessions).values(**values).returning(_sessions.c.session_id)
        ).scalar_one()
        user = conn.execute(select(_users).where(_users.c.user_id == row.user_id)).one()
    session = SessionRecord(
        session_id,
        row.org_id,
        row.user_id,
        kind,
        values["csrf_secret"],
        when,
        when,
        values["expires_at"],
    )
    return SignedIn(secret, session, _user(user), policy.idle_timeout)


def _count_failure(engine: Engine, actor: Actor, user_id: int, when: datetime, *, inactive: bool) -> None:
    with engine.begin() as conn:
        head = audit.lock_head(conn, actor.org_id)
        conn.execute(
            update(_users)
            .where(_users.c.user_id == user_id)
            .values(failed_signins=_users.c.failed_signins + 1)
        )
        failures = conn.execute(
            select(_users.c.failed_signins).where(_users.c.user_id == user_id)
        ).scalar_one()
        lock = _lock_for(failures)
        if lock is not None:
            conn.execute(update(_users).where(_users.c.user_id == user_id).values(locked_until=when + lock))
        audit.append_locked(
            conn,
            head,
            actor,
            "auth.sign_in",
            f"users/{user_id}",
            outcome=audit.DENIED,
            detail={"failures": failures, **({"locked_seconds": int(lock.total_seconds())} if lock else {})},
        )
    if inactive:
        log.warning("sign-in failed: user %s is inactive", user_id)
    elif lock is not None:
        log.warning(
            "sign-in failed: user %s, %s failures in a row; locked for %s s",
            user_id,
            failures,
            int(lock.total_seconds()),
        )
    else:
        log.warning("sign-in failed: user %s, %s failure(s) in a row", user_id, failures)


def authenticate(
    engine: Engine,
    policy: SessionPolicy,
    credential: str,
    *,
    request_id: str | None = None,
    client_address: str | None = None,
    now: datetime | None = None,
) -> Actor:
    """The actor behind a bearer credential (API token or session), or ``Unauthenticated``."""
    when = now or _now()
    if credential.startswith(TOKEN_PREFIX):
        return _token_actor(engine, credential, when, request_id, client_address)
    if credential.startswith(SESSION_PREFIX):
        actor, _session_record = session_actor(
            engine, policy, credential, request_id=request_id, client_address=client_address, now=when
        )
        return actor
    raise Unauthenticated("the credential is not one this server issues", code="bad_credential")


def _token_actor(
    engine: Engine, credential: str, when: datetime, request_id: str | None, client_address: str | None
) -> Actor:
    t = _tokens
    with engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.digest == token_digest(credential))).first()
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("the token is unknown or revoked", code="bad_credential")
    if row.last_used_at is None or when - row.last_used_at > TOUCH_EVERY:
        with engine.begin() as conn:
            conn.execute(update(t).where(t.c.token_id == row.token_id).values(last_used_at=when))
    return Actor(
        org_id=row.org_id,
        actor=f"token:{row.token_id}",
        role=Role(row.role),
        name=row.name,
        request_id=request_id,
        client_address=client_address,
        token_id=row.token_id,
    )


def session_actor(
    engine: Engine,
    policy: SessionPolicy,
    credential: str,
    *,
    request_id: str | None = None,
    client_address: str | None = None,
    now: datetime | None = None,
) -> tuple[Actor, SessionRecord]:
    """The signed-in user behind a session id, with the session (for its CSRF secret).

    A session ends after ``idle_timeout`` without a request, at ``expires_at`` whatever
    the activity, when revoked, and when its user is deactivated. The user's current role
    applies, so a role change takes effect on the next request.
    """
    when = now or _now()
    s, u = _sessions, _users
    with engine.connect() as conn:
        row = conn.execute(
            select(s, u.c.role, u.c.email, u.c.active)
            .join(u, u.c.user_id == s.c.user_id)
            .where(s.c.digest == session_digest(policy, credential))
        ).first()
    if row is None or row.revoked_at is not None or not row.active:
        raise Unauthenticated("the session is unknown or has ended; sign in again", code="bad_credential")
    if when >= row.expires_at or when - row.last_seen_at > policy.idle_timeout:
        raise Unauthenticated("the session has expired; sign in again", code="session_expired")
    # Touch at most once a minute, but well inside the idle limit, so a short limit
    # (a test's, or a strict practice's) never expires a session that is in use.
    if when - row.last_seen_at > min(TOUCH_EVERY, policy.idle_timeout / 4):
        with engine.begin() as conn:
            conn.execute(update(s).where(s.c.session_id == row.session_id).values(last_seen_at=when))
    actor = Actor(
        org_id=row.org_id,
        actor=f"user:{row.user_id}",
        role=Role(row.role),
        name=row.email,
        request_id=request_id,
        client_address=client_address,
        user_id=row.user_id,
        session_id=row.session_id,
    )
    return actor, _session(row)


def end_session(engine: Engine, actor: Actor) -> bool:
    """Sign out: the actor's session is revoked. False when the actor holds no session."""
    if actor.session_id is None:
        return False
    with engine.begin() as conn:
        conn.execute(
            update(_sessions)
            .where(_sessions.c.session_id == actor.session_id, _sessions.c.revoked_at.is_(None))
            .values(revoked_at=_now())
        )
    return True


def csrf_matches(session: SessionRecord, presented: str | None) -> bool:
    """The web forms' check: the token in the form equals the session's CSRF secret."""
    return presented is not None and hmac.compare_digest(session.csrf_secret, presented)


@dataclass(frozen=True)
class Profile:
    """What a signed-in page shows about who is signed in: names only, never a secret."""

    display_name: str
    email: str
    org_name: str


def profile(engine: Engine, actor: Actor) -> Profile:
    """The signed-in user's display name and organization name (the web app's header)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(_users.c.display_name, _users.c.email, _orgs.c.name)
            .join(_orgs, _orgs.c.org_id == _users.c.org_id)
            .where(_users.c.user_id == actor.user_id, _users.c.org_id == actor.org_id)
        ).first()
    if row is None:
        raise Unauthenticated("the session's user no longer exists; sign in again", code="bad_credential")
    return Profile(row.display_name, row.email, row.name)
