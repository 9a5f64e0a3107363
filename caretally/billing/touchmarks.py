"""What a stored run had seen, so a later incremental run knows what changed after it.

Written in the run's own transaction (its snapshot): the highest ``month_touches`` id it
saw and a digest of the billing history of earlier months it read. (Runs stored before
summed digests also kept each patient's share of their decisions digest here; a run now
stores ``{}``: its digests are updated from the base's, see ``billing.run.DigestSum``.)
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, func, insert, select

from caretally.store import schema


def touches_through(conn: Connection, org_id: str) -> int:
    """The highest ``month_touches`` id of the organization this snapshot holds (0: none)."""
    t = schema.month_touches
    found = conn.execute(select(func.max(t.c.id)).where(t.c.org_id == org_id)).scalar()
    return int(found or 0)


def history_key(conn: Connection, org_id: str, month: str) -> str:
    """A digest of every run of an earlier month and its status: the billed history a run reads.

    A run, lock or void of an earlier month changes it, and with it what once-per-episode
    and one-practitioner rules may decide.
    """
    r = schema.billing_runs
    rows = conn.execute(
        select(r.c.month, r.c.run_id, r.c.status)
        .where(r.c.org_id == org_id, r.c.month < month)
        .order_by(r.c.month, r.c.run_id)
    ).all()
    return hashlib.sha256("\n".join(f"{m}|{i}|{s}" for m, i, s in rows).encode()).hexdigest()


def mark_run(conn: Connection, org_id: str, month: str, run_id: str) -> None:
    """Store what run ``run_id`` of ``month`` saw (in its own transaction)."""
    conn.execute(
        insert(schema.run_touch_marks).values(
            run_id=run_id,
            org_id=org_id,
            touches_through=touches_through(conn, org_id),
            history_key=history_key(conn, org_id, month),
            decision_parts={},
        )
    )
