"""Do the stored runs still say what they said when they were stored? (``caretally db verify``)

A run stores three digests of itself: its claim lines (``lines_digest``), its decisions
(``decisions_digest``, from the rows of ``run_decisions``) and its input (``input_digest``,
from every patient's facts digest and the run's settings). Each is recomputed here from
the rows as they are now, with the same functions the run used, so an edited byte —
a changed unit, a rewritten reason, a deleted patient — shows as a digest that no longer
matches, named by run, month and digest. The database's own check runs too.

Runs stored before decisions digests existed have none to compare with: they are
listed as not verifiable on that digest, never as tampered. Runs stored before summed
digests (``billing_runs.digest_scheme`` NULL) chained SHA-256 over their parts in order
(lines in stored order, patients in Python's order of their ids); they are recomputed
that way, so they verify as they always did.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, select

from caretally.billing.run import (
    DIGEST_SCHEME,
    DigestSum,
    decision_rows,
    decisions_digest_part,
    input_digest_of,
    input_digest_part,
    line_content,
    line_digest_part,
    stored_line,
)
from caretally.errors import Problem
from caretally.store import schema
from caretally.store.db import integrity_check

MATCH, MISMATCH, NOT_VERIFIABLE = "match", "mismatch", "not verifiable"
#: The digests a run stores, in the order they are reported.
DIGESTS = ("lines", "decisions", "input")
_WHAT = {
    "lines": "its claim lines",
    "decisions": "its stored decisions",
    "input": "its facts digests or settings",
}
NOT_VERIFIABLE_REASON = "not verifiable (stored before decisions digests)"
#: ``run_decisions`` rows read per round trip while verifying.
_STREAM = 500


@dataclass(frozen=True)
class RunCheck:
    """One stored run and, per digest, ``match``, ``mismatch`` or ``not verifiable``."""

    run_id: str
    org_id: str
    month: str
    status: str
    digests: dict[str, str]

    @property
    def ok(self) -> bool:
        return MISMATCH not in self.digests.values()

    def problems(self) -> list[Problem]:
        return [
            Problem(
                "<db verify>",
                None,
                f"{name}_digest",
                "digest_mismatch",
                f"run {self.run_id} ({self.org_id}, {self.month}, {self.status}): {_WHAT[name]} no longer "
                f"match the {name} digest stored with the run",
                hint="a stored run is never edited: restore it from a backup, or find who changed it",
                run_id=self.run_id,
                month=self.month,
            )
            for name, verdict in self.digests.items()
            if verdict == MISMATCH
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "org_id": self.org_id,
            "month": self.month,
            "status": self.status,
            **{name: self.digests[name] for name in DIGESTS},
        }


@dataclass
class VerifyReport:
    runs: list[RunCheck]
    database_check: str
    database_findings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.database_findings and all(run.ok for run in self.runs)

    @property
    def problems(self) -> list[Problem]:
        found = [p for run in self.runs for p in run.problems()]
        found += [
            Problem("<db verify>", None, None, "integrity_check", f"{self.database_check}: {finding}")
            for finding in self.database_findings
        ]
        return found

    @property
    def not_verifiable(self) -> list[tuple[RunCheck, str]]:
        return [(run, name) for run in self.runs for name in DIGESTS if run.digests[name] == NOT_VERIFIABLE]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "runs_checked": len(self.runs),
            "database": {"check": self.database_check, "findings": self.database_findings},
            "problems": [p.to_json() for p in self.problems],
            "not_verifiable": [
                {
                    "run_id": run.run_id,
                    "org_id": run.org_id,
                    "month": run.month,
                    "digest": name,
                    "reason": NOT_VERIFIABLE_REASON,
                }
                for run, name in self.not_verifiable
            ],
            "runs": [run.to_json() for run in self.runs],
        }


def verify_database(engine: Engine, org_id: str | None = None) -> VerifyReport:
    """Recompute every stored run's digests (of one organization, or all) and check the database."""
    r = schema.billing_runs
    query = select(r).order_by(r.c.org_id, r.c.month, r.c.created_at, r.c.run_id)
    if org_id is not None:
        query = query.where(r.c.org_id == org_id)
    checks: list[RunCheck] = []
    with engine.connect() as conn:
        for run in conn.execute(query).all():
            summed = run.digest_scheme == DIGEST_SCHEME
            lines = _lines_digest(conn, run.run_id, summed)
            decisions, facts = _decision_digests(conn, run.run_id, summed)
            inputs = (input_digest_of if summed else chained_input_digest)(facts, run.settings or {})
            digests = {
                "lines": MATCH if lines == run.lines_digest else MISMATCH,
                "decisions": (
                    NOT_VERIFIABLE
                    if run.decisions_digest is None
                    else MATCH
                    if decisions == run.decisions_digest
                    else MISMATCH
                ),
                "input": MATCH if inputs == run.input_digest else MISMATCH,
            }
            checks.append(RunCheck(run.run_id, run.org_id, run.month, run.status, digests))
    check, findings = integrity_check(engine)
    return VerifyReport(checks, check, findings)


def chained_input_digest(facts_digests: str, settings_json: dict[str, Any]) -> str:
    """``input_digest`` of a run stored before summed digests: SHA-256 of the chained facts
    digests' hex followed by the settings as sorted JSON."""
    return hashlib.sha256((facts_digests + json.dumps(settings_json, sort_keys=True)).encode()).hexdigest()


def _lines_digest(conn: Connection, run_id: str, summed: bool) -> str:
    """``lines_digest`` as the run computed it: every line's content, summed or chained in stored order."""
    c = schema.claim_lines
    digest: DigestSum | Any = DigestSum() if summed else hashlib.sha256()
    rows = conn.execute(select(c).where(c.c.run_id == run_id).order_by(c.c.id)).mappings()
    for row in rows:
        digest.update(line_digest_part(line_content(stored_line(row))))
    return digest.hexdigest()


def _decision_digests(conn: Connection, run_id: str, summed: bool) -> tuple[str, str]:
    """(``decisions_digest``, the facts digests' digest) over the run's rows.

    Chained (runs stored before summed digests): the run met its patients in Python's
    order of their ids; the database may collate differently, so each row's share is kept
    by patient and combined in that order. Summed: order does not matter, and each facts
    digest is added with its patient (:func:`input_digest_part`).
    """
    d = schema.run_decisions
    parts: dict[str, tuple[str, str]] = {}
    # The stored text itself, not the document parsed from it: that is what was digested.
    # A row that refers to another run's row (``stored_in``) is digested as that row's text,
    # so an edit of a shared row shows in every run that refers to it.
    joined, text = decision_rows(text=True)
    query = (
        select(d.c.patient_id, d.c.facts_digest, d.c.billable_count, text)
        .select_from(joined)
        .where(d.c.run_id == run_id)
    )
    rows = conn.execute(query.execution_options(yield_per=_STREAM))
    for patient_id, facts_digest, billable, decisions in rows:
        parts[patient_id] = (decisions_digest_part(patient_id, billable, decisions), facts_digest)
    if summed:
        decisions_sum, facts_sum = DigestSum(), DigestSum()
        for patient_id, (part, facts_digest) in parts.items():
            decisions_sum.update(part.encode())
            facts_sum.update(input_digest_part(patient_id, facts_digest))
        return decisions_sum.hexdigest(), facts_sum.hexdigest()
    decisions_hash, facts_hash = hashlib.sha256(), hashlib.sha256()
    for patient_id in sorted(parts):
        part, facts_digest = parts[patient_id]
        decisions_hash.update(part.encode())
        facts_hash.update(facts_digest.encode())
    return decisions_hash.hexdigest(), facts_hash.hexdigest()
