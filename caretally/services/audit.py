"""The audit trail of PHI access: append-only, hash-chained per organization, verifiable.

Every event stores the hash of its organization's previous event and its own hash over a
canonical serialisation of everything it says (patients touched included), so editing,
removing or reordering a stored event breaks the chain where it happened and
``verify_chain`` names that place. Appends for one organization are serialised by
updating its ``audit_chain_heads`` row before anything else in the transaction: a row
lock on PostgreSQL, the database write lock on SQLite. The head also records the last
number and hash, so removing the newest events is caught too.

What the chain cannot prove on its own: someone able to rewrite the whole table and the
head could forge a consistent history. ``caretally audit verify`` prints the head hash;
recording it elsewhere now and then (a ticket, a log shipper) closes that gap.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, and_, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from caretally.services.context import Actor
from caretally.services.errors import InvalidInput, NotFound, ServiceError
from caretally.store import schema

log = logging.getLogger("caretally.audit")
T = TypeVar("T")

GENESIS = "0" * 64
HASH_VERSION = "caretally-audit-v1"
SUCCESS, DENIED, NOT_FOUND, INVALID, ERROR = "success", "denied", "not_found", "invalid", "error"
OUTCOMES = (SUCCESS, DENIED, NOT_FOUND, INVALID, ERROR)
MAX_PAGE = 200
_VERIFY_BATCH = 2_000

_heads = schema.audit_chain_heads
_events = schema.audit_events
_patients = schema.audit_event_patients


@dataclass
class AuditNote:
    """What the audited work found out: the patients it touched and PHI-free facts."""

    patient_ids: set[str] = field(default_factory=set)
    detail: dict[str, Any] = field(default_factory=dict)

    def touch(self, ids: Iterable[str]) -> None:
        self.patient_ids.update(ids)


@dataclass(frozen=True)
class AuditEvent:
    event_id: int
    seq: int
    occurred_at: datetime
    actor: str
    actor_name: str | None
    action: str
    resource: str
    request_id: str | None
    client_address: str | None
    outcome: str
    detail: dict[str, Any] | None
    patient_ids: tuple[str, ...]
    prev_hash: str
    event_hash: str


def outcome_of(exc: BaseException) -> str:
    """The outcome an audit event records for a failed call."""
    if isinstance(exc, ServiceError):
        return {403: DENIED, 401: DENIED, 404: NOT_FOUND, 422: INVALID, 400: INVALID}.get(exc.status, ERROR)
    return ERROR


# ----------------------------------------------------------------------------------------
# Hashing
# ----------------------------------------------------------------------------------------


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def event_hash(
    *,
    org_id: str,
    seq: int,
    occurred_at: datetime,
    actor: str,
    actor_name: str | None,
    action: str,
    resource: str,
    request_id: str | None,
    client_address: str | None,
    outcome: str,
    detail: dict[str, Any] | None,
    patient_ids: Sequence[str],
    prev_hash: str,
) -> str:
    """SHA-256 over a canonical JSON form: sorted keys, no spaces, patients sorted."""
    body = {
        "org_id": org_id,
        "seq": seq,
        "occurred_at": _instant(occurred_at),
        "actor": actor,
        "actor_name": actor_name,
        "action": action,
        "resource": resource,
        "request_id": request_id,
        "client_address": client_address,
        "outcome": outcome,
        "detail": detail,
        "patient_ids": sorted(patient_ids),
        "prev_hash": prev_hash,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{HASH_VERSION}\n{text}".encode()).hexdigest()


def _fit(value: str | None, length: int) -> str | None:
    """Values cut to their column's size before hashing, so what is stored is what was hashed."""
    return None if value is None else value[:length]


def _clean_detail(detail: dict[str, Any] | None) -> dict[str, Any] | None:
    """Detail must survive a JSON round trip unchanged (ints, text, booleans, lists, dicts)."""
    if not detail:
        return None
    return json.loads(json.dumps(detail, sort_keys=True, default=str))


# ----------------------------------------------------------------------------------------
# Appending
# ----------------------------------------------------------------------------------------


def _insert_head_if_missing(conn: Connection, org_id: str) -> None:
    values = {"org_id": org_id, "seq": 0, "last_hash": GENESIS}
    if conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(_heads).values(**values).on_conflict_do_nothing())
    elif conn.dialect.name == "sqlite":
        conn.execute(sqlite.insert(_heads).values(**values).on_conflict_do_nothing())
    else:  # pragma: no cover - the two databases we support are above
        conn.execute(insert(_heads).values(**values))


def lock_head(conn: Connection, org_id: str) -> tuple[int, str]:
    """Take the organization's append lock; returns (last seq, last hash).

    Must be the transaction's first write: the UPDATE is what takes the lock on both
    databases (SQLite upgrades to its write lock, PostgreSQL locks the row).
    """
    done = conn.execute(update(_heads).where(_heads.c.org_id == org_id).values(seq=_heads.c.seq))
    if done.rowcount == 0:
        orgs = schema.organizations
        if conn.execute(select(orgs.c.org_id).where(orgs.c.org_id == org_id)).first() is None:
            raise NotFound(
                f"there is no organization {org_id}",
                hint=f"create it with `caretally orgs add {org_id} --name NAME`",
                code="no_such_org",
            )
        _insert_head_if_missing(conn, org_id)
        conn.execute(update(_heads).where(_heads.c.org_id == org_id).values(seq=_heads.c.seq))
    row = conn.execute(select(_heads.c.seq, _heads.c.last_hash).where(_heads.c.org_id == org_id)).one()
    return int(row.seq), str(row.last_hash)


def append_locked(
    conn: Connection,
    head: tuple[int, str],
    actor: Actor,
    action: str,
    resource: str,
    *,
    outcome: str = SUCCESS,
    patient_ids: Iterable[str] = (),
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> tuple[int, str]:
    """Append one event after ``lock_head``; returns the new head (seq, hash)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown audit outcome {outcome!r}")
    seq, prev = head[0] + 1, head[1]
    when = (now or datetime.now(UTC)).astimezone(UTC)
    patients = sorted({p for p in patient_ids if p})
    fields: dict[str, Any] = {
        "org_id": actor.org_id,
        "seq": seq,
        "occurred_at": when,
        "actor": _fit(actor.actor, 120) or "unknown",
        "actor_name": _fit(actor.name, 254),
        "action": _fit(action, 64) or "unknown",
        "resource": _fit(resource, 300) or "",
        "request_id": _fit(actor.request_id, 64),
        "client_address": _fit(actor.client_address, 64),
        "outcome": outcome,
        "detail": _clean_detail(detail),
    }
    digest = event_hash(**fields, patient_ids=patients, prev_hash=prev)
    event_id = conn.execute(
        insert(_events).values(**fields, prev_hash=prev, event_hash=digest).returning(_events.c.event_id)
    ).scalar_one()
    if patients:
        conn.execute(
            insert(_patients),
            [{"event_id": event_id, "org_id": actor.org_id, "patient_id": p} for p in patients],
        )
    conn.execute(update(_heads).where(_heads.c.org_id == actor.org_id).values(seq=seq, last_hash=digest))
    return seq, digest


def record(
    engine: Engine,
    actor: Actor,
    action: str,
    resource: str,
    *,
    outcome: str = SUCCESS,
    patient_ids: Iterable[str] = (),
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one event in its own transaction (work already done, or refused)."""
    with queued_write(engine), engine.begin() as conn:
        head = lock_head(conn, actor.org_id)
        append_locked(
            conn, head, actor, action, resource, outcome=outcome, patient_ids=patient_ids, detail=detail
        )


_APPENDERS: dict[str, threading.Lock] = {}
_APPENDERS_GUARD = threading.Lock()


@contextmanager
def queued_write(engine: Engine) -> Iterator[None]:
    """On SQLite, this process's appends (and live ingest) wait their turn on a lock of ours.

    SQLite's busy handler makes a waiting writer sleep and retry (up to 100 ms a sleep),
    so eight requests appending at once spent much of their time asleep after the lock
    was free. Waiting here wakes the next one as soon as the previous append commits.
    Must hold exactly one write transaction, never another ``queued_write``.
    Nothing else changes: the append still takes SQLite's write lock, which is what
    serialises writers of other processes; a turn not had within the lock timeout is the
    ``LockTimeout`` SQLite's own wait would have ended in (503 ``database_busy`` for ingest).
    """
    if engine.dialect.name != "sqlite":
        yield
        return
    from caretally.store.db import LockTimeout, lock_timeout

    key = str(engine.url)
    with _APPENDERS_GUARD:
        lock = _APPENDERS.setdefault(key, threading.Lock())
    wait = lock_timeout()
    if not lock.acquire(timeout=wait):
        raise LockTimeout(wait, "sqlite")
    try:
        yield
    finally:
        lock.release()


@contextmanager
def audited(
    engine: Engine, actor: Actor, action: str, resource: str
) -> Iterator[tuple[Connection, AuditNote]]:
    """One transaction holding the work and its audit event, committed together.

    The chain lock is taken first. A ``ServiceError`` raised by the work (not found,
    invalid) is recorded with its outcome, committed, and raised again; the work must
    raise those before it writes anything. Any other failure rolls everything back and
    is recorded as ``error`` in a transaction of its own.
    """
    note = AuditNote()
    failure: ServiceError | None = None
    try:
        with engine.begin() as conn:
            head = lock_head(conn, actor.org_id)
            try:
                yield conn, note
            except ServiceError as exc:
                failure = exc
            append_locked(
                conn,
                head,
                actor,
                action,
                resource,
                outcome=SUCCESS if failure is None else outcome_of(failure),
                patient_ids=note.patient_ids if failure is None else (),
                detail=note.detail,
            )
    except ServiceError:
        raise  # the organization itself is unknown: there is no chain to record in
    except Exception:
        _record_error(engine, actor, action, resource)
        raise
    if failure is not None:
        raise failure


def audited_call(
    engine: Engine,
    actor: Actor,
    action: str,
    resource: str,
    work: Callable[[AuditNote], T],
) -> T:
    """Run work that opens its own connections (explain, worklist, imports), then record it.

    The event is appended after the work in a transaction of its own: such work can take
    minutes and must not hold the organization's chain lock meanwhile.
    """
    note = AuditNote()
    try:
        result = work(note)
    except ServiceError as exc:
        record(engine, actor, action, resource, outcome=outcome_of(exc), detail=note.detail or None)
        raise
    except Exception:
        _record_error(engine, actor, action, resource)
        raise
    record(engine, actor, action, resource, patient_ids=note.patient_ids, detail=note.detail or None)
    return result


def _record_error(engine: Engine, actor: Actor, action: str, resource: str) -> None:
    try:
        record(engine, actor, action, resource, outcome=ERROR)
    except Exception:  # the database itself is failing: the caller's error is the one to report
        log.error("could not record a failed %s in the audit trail", action)


# ----------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    patient_id: str | None = None
    actor: str | None = None  # "user:12", "token:3", "cli:name", or an email / token name
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text[:1] != "s" or not text[1:].isdigit():
            raise ValueError(cursor)
        return int(text[1:])
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(
            "the cursor is not one this server gave", code="invalid_cursor", hint="start again without cursor"
        ) from None


def _patients_of(conn: Connection, event_ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {i: [] for i in event_ids}
    if not event_ids:
        return out
    rows = conn.execute(
        select(_patients.c.event_id, _patients.c.patient_id)
        .where(_patients.c.event_id.in_(list(event_ids)))
        .order_by(_patients.c.event_id, _patients.c.patient_id)
    )
    for event_id, patient_id in rows:
        out.setdefault(event_id, []).append(patient_id)
    return out


def _event(row: Any, patients: Sequence[str]) -> AuditEvent:
    return AuditEvent(
        row.event_id,
        row.seq,
        row.occurred_at,
        row.actor,
        row.actor_name,
        row.action,
        row.resource,
        row.request_id,
        row.client_address,
        row.outcome,
        row.detail,
        tuple(patients),
        row.prev_hash,
        row.event_hash,
    )


def list_events(
    engine: Engine, actor: Actor, filters: EventFilter, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[AuditEvent], str | None]:
    """Events of the actor's organization, newest first, filtered, paged by an opaque cursor.

    Reading the trail is itself recorded (``audit.read``), with the patients whose ids
    the page disclosed.
    """
    limit = max(1, min(limit, MAX_PAGE))
    before = decode_cursor(cursor)
    e = _events
    conditions = [e.c.org_id == actor.org_id]
    if before is not None:
        conditions.append(e.c.seq < before)
    if filters.patient_id is not None:
        conditions.append(
            e.c.event_id.in_(
                select(_patients.c.event_id).where(
                    _patients.c.org_id == actor.org_id, _patients.c.patient_id == filters.patient_id
                )
            )
        )
    if filters.actor is not None:
        conditions.append((e.c.actor == filters.actor) | (e.c.actor_name == filters.actor))
    if filters.action is not None:
        conditions.append(e.c.action == filters.action)
    if filters.since is not None:
        conditions.append(e.c.occurred_at >= filters.since)
    if filters.until is not None:
        conditions.append(e.c.occurred_at < filters.until)
    resource = "audit-events"
    with audited(engine, actor, "audit.read", resource) as (conn, note):
        query = select(e).where(and_(*conditions)).order_by(e.c.seq.desc()).limit(limit + 1)
        rows = conn.execute(query).all()
        page = rows[:limit]
        patients = _patients_of(conn, [r.event_id for r in page])
        events = [_event(r, patients.get(r.event_id, [])) for r in page]
        for event in events:
            note.touch(event.patient_ids)
        note.detail = {"events": len(events)}
    following = encode_cursor(page[-1].seq) if len(rows) > limit and page else None
    return events, following


# ----------------------------------------------------------------------------------------
# Verifying
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainCheck:
    org_id: str
    events: int
    head_seq: int
    head_hash: str
    broken_at: int | None = None  # the event number where the chain first breaks
    event_id: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "ok": self.ok,
            "events": self.events,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "broken_at": self.broken_at,
            "event_id": self.event_id,
            "problem": self.problem,
        }


def chain_orgs(engine: Engine) -> list[str]:
    """Every organization that has an audit chain (or events without one)."""
    with engine.connect() as conn:
        heads = {r for (r,) in conn.execute(select(_heads.c.org_id))}
        with_events = {r for (r,) in conn.execute(select(_events.c.org_id).distinct())}
    return sorted(heads | with_events)


def _link_problem(row: Any, expected_seq: int, prev_hash: str, patients: Sequence[str]) -> str | None:
    """Why this event does not continue the chain, or ``None`` when it does."""
    if row.seq > expected_seq:
        return f"{row.seq - expected_seq} event(s) before number {row.seq} are missing (removed)"
    if row.seq != expected_seq:
        return f"event number {row.seq} is out of order"
    if row.prev_hash != prev_hash:
        return f"event {row.seq} does not link to event {row.seq - 1} (its previous hash differs)"
    digest = event_hash(
        org_id=row.org_id,
        seq=row.seq,
        occurred_at=row.occurred_at,
        actor=row.actor,
        actor_name=row.actor_name,
        action=row.action,
        resource=row.resource,
        request_id=row.request_id,
        client_address=row.client_address,
        outcome=row.outcome,
        detail=row.detail,
        patient_ids=patients,
        prev_hash=row.prev_hash,
    )
    if digest != row.event_hash:
        return f"event {row.seq} was altered: its content no longer matches its hash"
    return None


def verify_chain(engine: Engine, org_id: str) -> ChainCheck:
    """Walk the organization's events in order; the first broken link is reported."""
    e = _events
    with engine.connect() as conn:
        head_row = conn.execute(
            select(_heads.c.seq, _heads.c.last_hash).where(_heads.c.org_id == org_id)
        ).first()
        head_seq, head_hash = _head(head_row)
        expected_seq, prev_hash, count, last_seq = 1, GENESIS, 0, 0
        while True:
            query = select(e).where(e.c.org_id == org_id)
            if count:
                query = query.where(e.c.seq > last_seq)
            rows = conn.execute(query.order_by(e.c.seq).limit(_VERIFY_BATCH)).all()
            patients = _patients_of(conn, [r.event_id for r in rows])
            for row in rows:
                count += 1
                problem = _link_problem(row, expected_seq, prev_hash, patients.get(row.event_id, []))
                if problem is not None:
                    return ChainCheck(org_id, count, head_seq, head_hash, row.seq, row.event_id, problem)
                prev_hash, last_seq = row.event_hash, row.seq
                expected_seq += 1
            if len(rows) < _VERIFY_BATCH:
                break
        orphans = conn.execute(
            select(func.count())
            .select_from(_patients.outerjoin(e, e.c.event_id == _patients.c.event_id))
            .where(_patients.c.org_id == org_id, e.c.event_id.is_(None))
        ).scalar_one()
    if head_row is None and count:
        return ChainCheck(org_id, count, 0, GENESIS, None, None, "the chain head record is missing")
    if head_seq != last_seq or head_hash != prev_hash:
        if head_seq > last_seq:
            problem = (
                f"the newest {head_seq - last_seq} event(s) after number {last_seq} are missing (removed)"
            )
        else:
            problem = f"the chain head (event {head_seq}) does not match the last event ({last_seq})"
        return ChainCheck(org_id, count, head_seq, head_hash, last_seq + 1, None, problem)
    if orphans:
        problem = f"{orphans} patient row(s) belong to no event"
        return ChainCheck(org_id, count, head_seq, head_hash, None, None, problem)
    return ChainCheck(org_id, count, head_seq, head_hash)


def _head(head: Any) -> tuple[int, str]:
    return (0, GENESIS) if head is None else (int(head.seq), str(head.last_hash))


def record_cli_access(
    engine: Engine,
    org_id: str,
    action: str,
    resource: str,
    patient_ids: Iterable[str] = (),
    detail: dict[str, Any] | None = None,
) -> None:
    """What the PHI-reading commands (explain, worklist, export) call after they read.

    The actor is the operating-system user at the terminal (``cli:<name>``).
    """
    from caretally.services.context import cli_actor

    record(engine, cli_actor(org_id), action, resource, patient_ids=patient_ids, detail=detail)


def run_patients(engine: Engine, run_id: str) -> set[str]:
    """The patients with claim lines in a run: whom an export of it discloses."""
    lines = schema.claim_lines
    with engine.connect() as conn:
        return set(
            conn.execute(select(lines.c.patient_id).where(lines.c.run_id == run_id).distinct()).scalars()
        )
