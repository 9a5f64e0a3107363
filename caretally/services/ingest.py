"""Live ingest through the service: readings, FHIR bundles, the Tenovi webhook, time entries.

The ingest functions (``caretally.ingest.live`` and its siblings) already validate,
merge idempotently, retry a lost race and keep every attempt one transaction. What this
layer adds is what a caller acting for someone needs:

* the **audit event** of every write (``readings.write``, ``fhir.write``,
  ``tenovi.write``, ``time_entries.write``, ``time_entry.amend``) naming the patients
  whose data changed, appended after the work (``audit.audited_call``): ingest opens its
  own transactions and must not hold the organization's chain lock while it merges;
* **refusals as values**: a request that stored nothing raises ``IngestRefused`` (422,
  every problem with its JSON pointer), one that touches a month a locked run billed
  ``LockedMonth`` (409, naming the run), a correction of an entry that is not stored (or
  is another organization's) ``NotFound``;
* a **busy database** as ``DatabaseBusy`` (503 with Retry-After), never a server error:
  SQLite's one write lock held past ``$CARETALLY_LOCK_TIMEOUT``, or a PostgreSQL lock or
  serialization conflict that outlasted the retries;
* the **webhook secret**: one per organization and source, stored as a SHA-256 digest;
  the webhook request's secret is what names its organization.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, event, insert, select
from sqlalchemy.exc import DBAPIError

from caretally.errors import Problem
from caretally.ingest.live import LiveResult
from caretally.services import audit
from caretally.services.accounts import require_org
from caretally.services.context import Actor
from caretally.services.errors import InvalidInput, NotFound, ServiceError, Unauthenticated, Unavailable
from caretally.services.permissions import Role
from caretally.store import schema
from caretally.store.db import DatabaseUnavailable, lock_timeout

log = logging.getLogger("caretally.services.ingest")
#: What a caller runs after an ingest committed, given the organization (the server
#: queues the kept worklist's refresh); see ``after_commit``.
Touched = Callable[[str], object]
#: Webhook sources that authenticate with a shared secret.
WEBHOOK_SOURCES = ("tenovi",)
MIN_WEBHOOK_SECRET, MAX_WEBHOOK_SECRET = 32, 256
#: Seconds a client is asked to wait after a busy answer.
RETRY_AFTER = 2
#: PostgreSQL SQLSTATEs that mean another transaction held what we needed:
#: lock_not_available, serialization_failure, deadlock_detected, query_canceled (lock_timeout).
_BUSY_STATES = frozenset({"55P03", "40001", "40P01", "57014"})


class IngestRefused(InvalidInput):
    """Nothing was stored: ``result`` lists every problem and every item's outcome."""

    code = "ingest_refused"

    def __init__(self, result: LiveResult, message: str, **kwargs: Any) -> None:
        super().__init__(message, problems=result.problems, **kwargs)
        self.result = result


class LockedMonth(ServiceError):
    """Time in a month that a locked run billed: the run is the record of what was claimed."""

    status = 409
    code = "locked_month"

    def __init__(self, result: LiveResult, message: str, **kwargs: Any) -> None:
        super().__init__(message, problems=result.problems, **kwargs)
        self.result = result


class DatabaseBusy(Unavailable):
    """Another writer held the database for the whole wait; the client should retry."""

    code = "database_busy"

    def __init__(self, message: str, retry_after: int = RETRY_AFTER, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


def _busy(exc: BaseException) -> bool:
    if isinstance(exc, DatabaseUnavailable):
        return "locked" in exc.message
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        if getattr(exc.orig, "sqlstate", None) in _BUSY_STATES:
            return True
        text = str(exc.orig).lower()
        return "database is locked" in text or "database table is locked" in text or "busy" in text
    return False


@contextmanager
def busy_as_unavailable() -> Iterator[None]:
    """A lock held past our wait becomes ``DatabaseBusy``; nothing of the request was stored."""
    try:
        yield
    except (DatabaseUnavailable, DBAPIError) as exc:
        if not _busy(exc):
            raise
        raise DatabaseBusy(
            "the database is busy with other writes; nothing of this request was stored",
            hint=f"send the same request again in {RETRY_AFTER} s (it is idempotent)",
        ) from None


_BOUNDED: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def bounded(engine: Engine) -> Engine:
    """The engine ingest writes through: on PostgreSQL every transaction waits for a lock
    at most ``$CARETALLY_LOCK_TIMEOUT`` seconds (SQLite's ``begin_write`` already does).

    Without it a request behind a long lock (a migration, a manual ``LOCK TABLE``) would
    hang for as long as the lock is held; with it the client hears 503 and retries.
    """
    if engine.dialect.name != "postgresql":
        return engine
    found = _BOUNDED.get(engine)
    if found is None:
        found = engine.execution_options()

        def limit(conn: Connection) -> None:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, int(lock_timeout() * 1000))}")

        event.listen(found, "begin", limit)
        _BOUNDED[engine] = found
    return found


# ----------------------------------------------------------------------------------------
# Writes
# ----------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _locked(result: LiveResult) -> Problem | None:
    return next((p for p in result.problems if p.code == "locked_month"), None)


def _audited_write(
    engine: Engine,
    actor: Actor,
    action: str,
    resource: str,
    partial: bool,
    ingest: Callable[[], LiveResult],
    touched: Touched | None = None,
) -> LiveResult:
    """Run one ingest call, record it with the patients it changed, refuse what stored nothing.

    ``touched(org_id)`` is called after the commit when something was stored: the server
    queues a refresh of the kept worklist there (``JobQueue.enqueue_worklist_refresh``).
    """

    def work(note: audit.AuditNote) -> LiveResult:
        with audit.queued_write(engine):  # one write transaction (and its retries), in turn
            result = ingest()
        counts = {k: v for k, v in result.counts.items() if v}
        note.detail = {
            "batch_id": result.batch_id,
            "stored": result.stored,
            "partial": partial,
            "counts": counts,
            "problems": len(result.problems),
        }
        if result.stored:
            note.touch(p for p, _ in result.touched)
            note.touch(result.changed_patients)
            return result
        locked = _locked(result)
        if locked is not None:
            raise LockedMonth(
                result,
                locked.message,
                hint="record the time in an open month, or amend the locked run's claims first",
            )
        raise IngestRefused(
            result,
            f"nothing was stored: the request has {len(result.problems)} problem(s)",
            hint="fix them, or send partial=true to store the valid items",
        )

    with busy_as_unavailable():
        result = audit.audited_call(engine, actor, action, resource, work)
    after_commit(touched, actor.org_id)
    return result


def after_commit(touched: Touched | None, org_id: str) -> None:
    """Tell the caller's hook that the organization's data changed; a hook that fails
    (a broker that is down) costs freshness of the kept worklist, never the stored write."""
    if touched is None:
        return
    try:
        touched(org_id)
    except Exception:
        log.warning("could not queue the worklist refresh after an ingest")


def post_readings(
    engine: Engine, actor: Actor, items: Any, *, partial: bool = False, touched: Touched | None = None
) -> LiveResult:
    """A JSON array of readings (the ``readings.csv`` fields), all-or-nothing unless ``partial``."""
    from caretally.ingest.live import ingest_readings

    return _audited_write(
        engine,
        actor,
        "readings.write",
        "readings",
        partial,
        lambda: ingest_readings(
            bounded(engine), actor.org_id, items, partial=partial, now=_now(), actor=actor.actor
        ),
        touched,
    )


def post_fhir(
    engine: Engine, actor: Actor, bundle: Any, *, partial: bool = False, touched: Touched | None = None
) -> LiveResult:
    """A FHIR R4 Bundle (batch, transaction or collection) of vital-sign Observations."""
    from caretally.ingest.fhir import ingest_fhir_bundle

    return _audited_write(
        engine,
        actor,
        "fhir.write",
        "fhir",
        partial,
        lambda: ingest_fhir_bundle(
            bounded(engine), actor.org_id, bundle, partial=partial, now=_now(), actor=actor.actor
        ),
        touched,
    )


def post_tenovi(
    engine: Engine, actor: Actor, payload: Any, *, partial: bool = False, touched: Touched | None = None
) -> LiveResult:
    """One Tenovi measurement webhook, for the organization its secret named (``webhook_actor``)."""
    from caretally.ingest.tenovi import ingest_tenovi

    return _audited_write(
        engine,
        actor,
        "tenovi.write",
        "webhooks/tenovi",
        partial,
        lambda: ingest_tenovi(
            bounded(engine), actor.org_id, payload, partial=partial, now=_now(), actor=actor.actor
        ),
        touched,
    )


def post_time_entries(
    engine: Engine, actor: Actor, items: Any, *, partial: bool = False, touched: Touched | None = None
) -> LiveResult:
    """A JSON array of time entries (the ``time_entries.csv`` fields)."""
    from caretally.ingest.time_entries import create_time_entries

    return _audited_write(
        engine,
        actor,
        "time_entries.write",
        "time-entries",
        partial,
        lambda: create_time_entries(
            bounded(engine), actor.org_id, items, partial=partial, now=_now(), actor=actor.actor
        ),
        touched,
    )


def amend_time_entry(
    engine: Engine, actor: Actor, entry_id: str, changes: Any, *, touched: Touched | None = None
) -> LiveResult:
    """Correct one stored time entry field by field: an audited amendment.

    An entry that is not stored, or is another organization's, is ``NotFound`` with the
    same words either way (the id is not repeated, so the two answers are identical).
    """
    from caretally.ingest.time_entries import amend_time_entry as amend

    def ingest() -> LiveResult:
        result = amend(bounded(engine), actor.org_id, entry_id, changes, actor=actor.actor, now=_now())
        if not result.stored and any(p.code == "unknown_entry" for p in result.problems):
            raise NotFound("no such time entry", code="no_such_time_entry")
        return result

    return _audited_write(
        engine, actor, "time_entry.amend", f"time-entries/{entry_id}", False, ingest, touched
    )


# ----------------------------------------------------------------------------------------
# Webhook secrets
# ----------------------------------------------------------------------------------------


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_source(source: str) -> str:
    if source not in WEBHOOK_SOURCES:
        raise InvalidInput(
            f"there is no webhook source {source!r}",
            hint=f"use one of {', '.join(WEBHOOK_SOURCES)}",
            code="unknown_webhook_source",
        )
    return source


def check_webhook_secret(secret: str) -> str:
    """A secret long and varied enough that one unsalted SHA-256 digest keeps it safe."""
    if not MIN_WEBHOOK_SECRET <= len(secret) <= MAX_WEBHOOK_SECRET:
        raise InvalidInput(
            f"a webhook secret has {MIN_WEBHOOK_SECRET}–{MAX_WEBHOOK_SECRET} characters",
            hint="leave the secret out to have a random one made",
            code="weak_webhook_secret",
        )
    if any(not c.isprintable() or c.isspace() for c in secret) or len(set(secret)) < 10:
        raise InvalidInput(
            "a webhook secret is printable, has no spaces and is not a repeated pattern",
            hint="leave the secret out to have a random one made",
            code="weak_webhook_secret",
        )
    return secret


@dataclass(frozen=True)
class WebhookSecretSet:
    org_id: str
    source: str
    secret: str  # shown once, by whoever set it
    replaced: bool


def set_webhook_secret(
    engine: Engine, actor: Actor, source: str, secret: str | None = None
) -> WebhookSecretSet:
    """Set (or replace) the organization's shared secret for ``source``; ``None`` makes one.

    The old secret stops working at once. Two organizations cannot hold the same secret
    (the digest is unique per source), since the secret is what names the organization.
    """
    check_source(source)
    chosen = check_webhook_secret(secret) if secret is not None else secrets.token_urlsafe(36)
    digest = _digest(chosen)
    w = schema.webhook_secrets
    resource = f"webhooks/{source}/secret"
    with audit.audited(engine, actor, "webhook_secret.set", resource) as (conn, note):
        require_org(conn, actor.org_id)
        taken = conn.execute(
            select(w.c.org_id).where(w.c.source == source, w.c.digest == digest, w.c.org_id != actor.org_id)
        ).first()
        if taken is not None:
            raise InvalidInput("choose another secret", code="webhook_secret_taken")
        replaced = (
            conn.execute(delete(w).where(w.c.org_id == actor.org_id, w.c.source == source)).rowcount > 0
        )
        conn.execute(
            insert(w).values(
                org_id=actor.org_id,
                source=source,
                digest=digest,
                created_at=_now(),
                created_by=actor.actor[:120],
            )
        )
        note.detail = {"source": source, "replaced": replaced}
    return WebhookSecretSet(actor.org_id, source, chosen, replaced)


def webhook_actor(
    engine: Engine,
    source: str,
    secret: str | None,
    *,
    request_id: str | None = None,
    client_address: str | None = None,
) -> Actor:
    """The organization whose secret for ``source`` the request carries, as an integration actor.

    No secret, or one that no organization holds, is ``Unauthenticated``; which of the
    two is not said.
    """
    check_source(source)
    if secret:
        w = schema.webhook_secrets
        with engine.connect() as conn:
            org_id = conn.execute(
                select(w.c.org_id).where(w.c.source == source, w.c.digest == _digest(secret))
            ).scalar_one_or_none()
        if org_id is not None:
            return Actor(
                org_id=org_id,
                actor=f"webhook:{source}",
                role=Role.INTEGRATION,
                name=f"{source} webhook",
                request_id=request_id,
                client_address=client_address,
            )
    raise Unauthenticated(
        f"the {source} webhook needs its shared secret",
        hint=f"send it in the X-Webhook-Secret header (set it with `caretally orgs set-webhook-secret "
        f"ORG --source {source}`)",
        code="bad_webhook_secret",
    )


def webhook_sources(engine: Engine, org_id: str) -> Mapping[str, datetime]:
    """Sources with a secret set for the organization, and when it was set (never the secret)."""
    w = schema.webhook_secrets
    with engine.connect() as conn:
        rows = conn.execute(select(w.c.source, w.c.created_at).where(w.c.org_id == org_id)).all()
    return {source: when for source, when in rows}
