"""Audit packets: everything behind one stored claim line, rebuilt from the stored run.

An auditor asks for a claim line months after it was billed, when later imports may have
corrected a reading, amended a time entry or added data. The packet therefore starts from
what the run stored — its line, the patient's stored decisions and their evidence (the
counted days and devices, the counted time entries, the rule values with citations) and
the run's digests — and reads back only the records that evidence names. Each record is
shown as it stood when the run was made: a later change or retraction recorded in
``audit_changes`` is undone for the packet's values and named beside them, so the packet
of a locked run stays the same after later imports and still says what changed since.

Readings carry no stored-at time; the run records the highest reading id of its snapshot
(``summary.readings_through``) and readings stored after it are left out. Runs stored
before that mark show every stored reading of the counted days, and the packet says so.

Columns other helpers add (``practitioners.employment``, a ``visits`` table, a patient's
``death_date``) are read only when the schema has them.

The packet's JSON shape is :class:`Packet` (``docs/packets.md``); reading one is a PHI read,
audited as ``packet.read`` with the patients it discloses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, Date, Engine, Table, select

from caretally.billing.run import SUPERSEDED, VOID, decision_rows, line_content, stored_line
from caretally.billing.serialize import stored_decisions_json
from caretally.ingest.rows import json_safe
from caretally.services import audit
from caretally.services.context import Actor
from caretally.services.errors import InvalidInput, NotFound
from caretally.services.months import month_period
from caretally.store import schema

#: Bumped when a field changes meaning or goes away (adding a field keeps it).
PACKET_VERSION = 1

# ----------------------------------------------------------------------------------------
# The documented shape (docs/packets.md); tests validate every packet against it.
# ----------------------------------------------------------------------------------------

Value = str | int | float | bool | None


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AfterRun(_Shape):
    """One change to a record stored after the run: what the run saw, and what it is now."""

    changed_at: str
    kind: Literal["changed", "retracted"]
    fields: dict[str, dict[str, Any]] = {}  # name → {"at_run": …, "now": …}
    reason: str | None = None


class RunPart(_Shape):
    run_id: str
    month: str
    status: str
    created_at: str
    locked_at: str | None
    amends_run_id: str | None
    engine_version: str
    ruleset_hash: str
    input_digest: str
    lines_digest: str
    decisions_digest: str | None
    facts_digest: str  # the patient's facts digest, one part of the input digest
    provisional: dict[str, Any] | None
    readings_through: int | None


class LinePart(_Shape):
    number: int  # 1-based position of the line in its run (claim lines in stored order)
    line_key: str
    patient_id: str
    enrollment_id: str
    program: str
    code: str
    units: int
    date_of_service: str
    period_start: str
    period_end: str
    billing_npi: str | None
    rendering_npi: str | None
    diagnosis_codes: list[str]
    place_of_service: str
    modifiers: list[str]
    charge: str
    expected_payment: str
    payer: str
    member_id: str | None


class Practitioner(_Shape):
    practitioner_id: str
    name: str | None
    npi: str | None
    credential: str | None
    performer_class: str | None
    employment: str | None = None  # only when the store records it


class PatientPart(_Shape):
    record: dict[str, Value]
    after_run: list[AfterRun] = []


class EnrollmentPart(_Shape):
    record: dict[str, Value]
    billing_practitioner: Practitioner | None
    after_run: list[AfterRun] = []


class Reading(_Shape):
    record: dict[str, Value]
    after_run: list[AfterRun] = []


class CountedDay(_Shape):
    date: str
    device_ids: list[str]
    readings: list[Reading]


class Device(_Shape):
    record: dict[str, Value]
    after_run: list[AfterRun] = []


class TimeEntry(_Shape):
    record: dict[str, Value]
    stopped_at: str | None
    performer: Practitioner | None
    live_call: bool
    after_run: list[AfterRun] = []


class Visit(_Shape):
    record: dict[str, Value]
    after_run: list[AfterRun] = []


class Packet(_Shape):
    """One claim line's packet: the JSON twin of its HTML page."""

    packet_version: int
    run: RunPart
    line: LinePart
    decision: dict[str, Any]  # the stored decision, as serialize.decision_to_json makes it
    patient: PatientPart
    enrollment: EnrollmentPart | None
    counted_days: list[CountedDay]
    devices: list[Device]
    time_entries: list[TimeEntry]
    live_call_entry_ids: list[str]
    visits: list[Visit] | None  # None: the store has no visits table
    rule_values: list[dict[str, str]]  # name, value, layer, citation
    notes: list[str]


# ----------------------------------------------------------------------------------------
# Choosing the lines
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PacketSet:
    """The packets a call asked for, with the run they come from."""

    run_id: str
    month: str
    packets: list[Packet]


def line_packets(
    engine: Engine,
    actor: Actor,
    *,
    run_id: str | None = None,
    line: int | None = None,
    patient_id: str | None = None,
    month: str | None = None,
    tables: Mapping[str, Table] | None = None,
) -> PacketSet:
    """Packets for one line of a run, a patient's lines in a month, or every line of a month.

    ``tables`` are the store's tables by name (default: ``store.schema``'s); the optional
    parts (``practitioners.employment``, ``visits``) are read when these tables have them.

    ``run_id`` + ``line``: that line (1-based, in stored order). ``month`` (+ ``patient_id``):
    the lines of the month's current run (its newest run not superseded), all of them or
    the patient's. Unknown runs, lines, patients and months without a run are ``NotFound``
    with a hint, recorded in the audit trail like every refused read.
    """
    if run_id is not None and month is not None:
        raise InvalidInput("give --run or --month, not both", hint="a run belongs to one month already")
    if run_id is None and month is None:
        raise InvalidInput("give --run ID --line N, --patient P --month M, or --month M")
    if run_id is not None and line is None and patient_id is None:
        raise InvalidInput(
            "--run needs --line N (or --patient P)", hint="lines are numbered from 1 in their run"
        )
    if line is not None and line < 1:
        raise InvalidInput(
            f"--line must be 1 or more, not {line}", hint="lines are numbered from 1 in their run"
        )
    if month is not None:
        month_period(month)
    where = f"runs/{run_id}" if run_id else f"months/{month}"
    resource = f"{where}/lines/{line}/packet" if line else f"{where}/packets"
    with audit.audited(engine, actor, "packet.read", resource) as (conn, note):
        run = _run(conn, actor.org_id, run_id, month)
        rows = _lines(conn, run, line, patient_id)
        builder = _Builder(conn, actor.org_id, run, tables or schema.metadata.tables)
        packets = [builder.packet(number, row) for number, row in rows]
        note.touch(p.line.patient_id for p in packets)
        note.detail = {"run_id": run.run_id, "lines": len(packets)}
    return PacketSet(run.run_id, run.month, packets)


def _run(conn: Connection, org_id: str, run_id: str | None, month: str | None) -> Any:
    r = schema.billing_runs
    if run_id is not None:
        row = conn.execute(select(r).where(r.c.org_id == org_id, r.c.run_id == run_id)).first()
        if row is None:
            raise NotFound(
                f"no run {run_id} in organization {org_id}",
                code="no_such_run",
                hint="caretally runs list shows the stored runs",
            )
        return row
    rows = conn.execute(
        select(r)
        .where(r.c.org_id == org_id, r.c.month == month, r.c.status.not_in((SUPERSEDED, VOID)))
        .order_by(r.c.created_at, r.c.run_id)
    ).all()
    if not rows:
        raise NotFound(
            f"{month} has no stored run",
            code="no_run",
            hint=f"bill it first: caretally bill --month {month}",
        )
    return rows[-1]


def _lines(conn: Connection, run: Any, number: int | None, patient_id: str | None) -> list[tuple[int, Any]]:
    c = schema.claim_lines
    rows = (
        conn.execute(select(c).where(c.c.org_id == run.org_id, c.c.run_id == run.run_id).order_by(c.c.id))
        .mappings()
        .all()
    )
    numbered = list(enumerate(rows, start=1))
    if number is not None:
        if number > len(rows):
            have = f"lines 1 to {len(rows)}" if rows else "no claim lines"
            raise NotFound(
                f"run {run.run_id} ({run.month}) has no line {number}: it has {have}",
                code="no_such_line",
                hint="lines are numbered in the run's stored order; caretally packet --run ID --patient P "
                "names a patient's lines by number",
            )
        numbered = [numbered[number - 1]]
    if patient_id is not None:
        numbered = [(n, r) for n, r in numbered if r["patient_id"] == patient_id]
        if not numbered:
            raise NotFound(
                f"patient {patient_id} has no claim line in run {run.run_id} ({run.month})",
                code="no_such_line",
                hint="caretally explain shows why a patient's codes did not bill",
            )
    if not numbered:
        raise NotFound(f"run {run.run_id} ({run.month}) has no claim lines", code="no_such_line")
    return numbered


# ----------------------------------------------------------------------------------------
# Building one packet
# ----------------------------------------------------------------------------------------


#: Columns a packet's records leave out: the tenant, the surrogate key, the source's extra columns.
_HIDDEN = frozenset({"org_id", "id", "extra"})


def _safe(row: Mapping[str, Any], drop: Iterable[str] = _HIDDEN) -> dict[str, Value]:
    skip = set(drop)
    return {k: json_safe(v) for k, v in row.items() if k not in skip}


class _Builder:
    """Reads what a run's packets need once per call (the run's decisions, later changes)."""

    def __init__(self, conn: Connection, org_id: str, run: Any, tables: Mapping[str, Table]):
        self.conn, self.org_id, self.run, self.tables = conn, org_id, run, tables
        self.after = self._changes_after(run.created_at)
        self.decisions: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self.practitioners: dict[str, Practitioner | None] = {}
        self.readings_through: int | None = (run.summary or {}).get("readings_through")
        # Readings retracted since the run, by patient: gone from the table, kept in the trail.
        self.retracted: dict[str, list[str]] = defaultdict(list)
        for (table, key), changes in self.after.items():
            for change in changes:
                old, new = change.old_values or {}, change.new_values or {}
                if table == schema.readings.name and "retraction_reason" in new and old.get("patient_id"):
                    self.retracted[str(old["patient_id"])].append(key)

    # -- records as the run saw them ------------------------------------------------------

    def _changes_after(self, since: datetime) -> dict[tuple[str, str], list[Any]]:
        a = schema.audit_changes
        out: dict[tuple[str, str], list[Any]] = defaultdict(list)
        rows = self.conn.execute(
            select(a)
            .where(a.c.org_id == self.org_id, a.c.changed_at > since)
            .order_by(a.c.changed_at, a.c.id)
        )
        for row in rows:
            out[(row.table_name, row.record_key)].append(row)
        return out

    def as_run(
        self, table: str, key: str, now: dict[str, Value] | None
    ) -> tuple[dict[str, Value] | None, list[AfterRun]]:
        """``now`` (the stored row, or ``None`` when it is gone) with every later change undone."""
        changes = self.after.get((table, key), [])
        record = dict(now) if now is not None else None
        notes: list[AfterRun] = []
        for change in reversed(changes):
            old, new = dict(change.old_values or {}), dict(change.new_values or {})
            when = json_safe(change.changed_at)
            if "retraction_reason" in new:
                record = {k: v for k, v in old.items() if k not in _HIDDEN}
                notes.append(
                    AfterRun(changed_at=when, kind="retracted", reason=str(new["retraction_reason"]))
                )
                continue
            if record is None:
                continue
            fields = {}
            for name, before in old.items():
                if name in _HIDDEN:
                    continue
                fields[name] = {"at_run": before, "now": new.get(name)}
                record[name] = before
            if not fields:
                continue
            notes.append(AfterRun(changed_at=when, kind="changed", fields=fields))
        notes.reverse()
        return record, notes

    def practitioner(self, practitioner_id: str | None) -> Practitioner | None:
        if not practitioner_id:
            return None
        if practitioner_id not in self.practitioners:
            t = self.tables["practitioners"]
            row = (
                self.conn.execute(
                    select(t).where(t.c.org_id == self.org_id, t.c.practitioner_id == practitioner_id)
                )
                .mappings()
                .first()
            )
            record, _ = self.as_run(t.name, practitioner_id, _safe(row) if row else None)
            self.practitioners[practitioner_id] = (
                None
                if record is None
                else Practitioner(
                    practitioner_id=practitioner_id,
                    name=_text(record.get("name")),
                    npi=_text(record.get("npi")) or None,
                    credential=_text(record.get("credential")),
                    performer_class=_text(record.get("performer_class")),
                    employment=_text(record.get("employment")) if "employment" in t.c else None,
                )
            )
        return self.practitioners[practitioner_id]

    def _one(self, table: Table, key_column: str, key: str) -> tuple[dict[str, Value] | None, list[AfterRun]]:
        row = (
            self.conn.execute(select(table).where(table.c.org_id == self.org_id, table.c[key_column] == key))
            .mappings()
            .first()
        )
        return self.as_run(table.name, key, _safe(row) if row else None)

    def _patient_decisions(self, patient_id: str) -> tuple[str, list[dict[str, Any]]]:
        if patient_id not in self.decisions:
            d = schema.run_decisions
            joined, value = decision_rows()
            row = self.conn.execute(
                select(d.c.facts_digest, value)
                .select_from(joined)
                .where(d.c.org_id == self.org_id, d.c.run_id == self.run.run_id, d.c.patient_id == patient_id)
            ).first()
            self.decisions[patient_id] = ("", []) if row is None else (row[0], stored_decisions_json(row[1]))
        return self.decisions[patient_id]

    # -- the packet ---------------------------------------------------------------------

    def packet(self, number: int, row: Mapping[str, Any]) -> Packet:
        line = stored_line(row)
        content = line_content(line)
        facts_digest, decisions = self._patient_decisions(line.patient_id)
        decision = _decision_of(decisions, content)
        notes: list[str] = []
        if decision is None:
            notes.append("the run stored no billable decision matching this line")
            decision = {}
        days, day_devices, devices_used, entry_ids, calls, base = _evidence(decision, decisions)
        if base is not None:
            notes.append(f"an add-on: its minutes are those counted for {base}, listed here")

        patient_now, patient_after = self._one(schema.patients, "patient_id", line.patient_id)
        enrollment = self._enrollment(line.enrollment_id)
        readings = self._readings(line.patient_id, days, day_devices)
        device_ids = sorted(
            set(devices_used)
            | {
                str(r.record.get("device_id"))
                for rs in readings.values()
                for r in rs
                if r.record.get("device_id")
            }
        )
        devices = []
        for device_id in device_ids:
            record, after = self._one(schema.devices, "device_id", device_id)
            if record is not None:
                devices.append(Device(record=record, after_run=after))
        entries = self._entries(entry_ids | calls, calls)
        missing = sorted((entry_ids | calls) - {str(e.record.get("entry_id")) for e in entries})
        if missing:
            notes.append(f"time entries counted by the run are no longer stored: {', '.join(missing)}")
        counted = [
            CountedDay(
                date=day.isoformat(),
                device_ids=sorted({str(r.record.get("device_id")) for r in readings.get(day, [])}),
                readings=readings.get(day, []),
            )
            for day in sorted(days)
        ]
        empty = [c.date for c in counted if not c.readings]
        if empty:
            notes.append(f"counted days with no reading stored now: {', '.join(empty)}")
        if self.readings_through is None and days:
            notes.append(
                "this run predates the reading mark (summary.readings_through): readings stored after the "
                "run on a counted day cannot be told apart and are listed too"
            )
        for part in (
            patient_after,
            *(r.after_run for rs in readings.values() for r in rs),
            *(e.after_run for e in entries),
        ):
            if part:
                notes.append("records changed after the run: the packet shows them as the run saw them")
                break
        return Packet(
            packet_version=PACKET_VERSION,
            run=self._run_part(facts_digest),
            line=LinePart(
                number=number,
                line_key=row["line_key"],
                patient_id=line.patient_id,
                enrollment_id=line.enrollment_id,
                program=line.program.value,
                code=line.code,
                units=line.units,
                date_of_service=line.date_of_service.isoformat(),
                period_start=line.period_start.isoformat(),
                period_end=line.period_end.isoformat(),
                billing_npi=line.billing_npi,
                rendering_npi=line.rendering_npi,
                diagnosis_codes=list(line.diagnosis_codes),
                place_of_service=line.place_of_service,
                modifiers=list(line.modifiers),
                charge=str(line.charge),
                expected_payment=str(line.expected_payment),
                payer=line.payer.value,
                member_id=line.member_id,
            ),
            decision=decision,
            patient=PatientPart(
                record=patient_now or {"patient_id": line.patient_id}, after_run=patient_after
            ),
            enrollment=enrollment,
            counted_days=counted,
            devices=devices,
            time_entries=entries,
            live_call_entry_ids=sorted(calls),
            visits=self._visits(line.patient_id, line.period_start, line.period_end, enrollment),
            rule_values=[dict(p) for p in decision.get("parameters", [])],
            notes=notes,
        )

    def _run_part(self, facts_digest: str) -> RunPart:
        run = self.run
        summary = run.summary or {}
        return RunPart(
            run_id=run.run_id,
            month=run.month,
            status=run.status,
            created_at=run.created_at.isoformat(),
            locked_at=run.locked_at.isoformat() if run.locked_at else None,
            amends_run_id=run.amends_run_id,
            engine_version=run.engine_version,
            ruleset_hash=run.ruleset_hash,
            input_digest=run.input_digest,
            lines_digest=run.lines_digest,
            decisions_digest=run.decisions_digest,
            facts_digest=facts_digest,
            provisional=summary.get("provisional"),
            readings_through=self.readings_through,
        )

    def _enrollment(self, enrollment_id: str) -> EnrollmentPart | None:
        record, after = self._one(schema.enrollments, "enrollment_id", enrollment_id)
        if record is None:
            return None
        return EnrollmentPart(
            record=record,
            billing_practitioner=self.practitioner(_text(record.get("billing_practitioner_id"))),
            after_run=after,
        )

    def _readings(
        self, patient_id: str, days: set[date], devices: Sequence[str]
    ) -> dict[date, list[Reading]]:
        """The counted days' readings from the counted devices, as the run saw them."""
        if not days:
            return {}
        t = schema.readings
        query = select(t).where(
            t.c.org_id == self.org_id,
            t.c.patient_id == patient_id,
            t.c.local_date >= min(days),
            t.c.local_date <= max(days),
        )
        if self.readings_through is not None:
            query = query.where(t.c.id <= self.readings_through)
        out: dict[date, list[Reading]] = defaultdict(list)
        seen: set[str] = set()
        for row in self.conn.execute(query.order_by(t.c.measured_at, t.c.id)).mappings():
            key = row["reading_key"]
            seen.add(key)
            record, after = self.as_run(t.name, key, _safe(row))
            if record is None:
                continue
            self._add_reading(out, record, after, days, devices)
        # Retracted since the run: gone from the table, kept in the audit trail.
        for key in self.retracted.get(patient_id, ()):
            if key in seen:
                continue
            record, after = self.as_run(t.name, key, None)
            if record is not None:
                self._add_reading(out, record, after, days, devices)
        for rows in out.values():
            rows.sort(key=lambda r: str(r.record.get("measured_at")))
        return out

    @staticmethod
    def _add_reading(
        out: dict[date, list[Reading]],
        record: dict[str, Value],
        after: list[AfterRun],
        days: set[date],
        devices: Sequence[str],
    ) -> None:
        day = date.fromisoformat(str(record.get("local_date")))
        if day not in days or (devices and record.get("device_id") not in devices):
            return
        out[day].append(Reading(record=record, after_run=after))

    def _entries(self, ids: set[str], calls: set[str]) -> list[TimeEntry]:
        t = schema.time_entries
        out = []
        for entry_id in sorted(ids):
            record, after = self._one(t, "entry_id", entry_id)
            if record is None:
                continue
            started = record.get("started_at")
            seconds = record.get("seconds")
            stopped = (
                (datetime.fromisoformat(str(started)) + timedelta(seconds=int(seconds))).isoformat()
                if started and isinstance(seconds, int)
                else None
            )
            out.append(
                TimeEntry(
                    record=record,
                    stopped_at=stopped,
                    performer=self.practitioner(_text(record.get("practitioner_id"))),
                    live_call=entry_id in calls,
                    after_run=after,
                )
            )
        out.sort(key=lambda e: str(e.record.get("started_at")))
        return out

    def _visits(
        self, patient_id: str, start: date, end: date, enrollment: EnrollmentPart | None
    ) -> list[Visit] | None:
        """The patient's visits in the line's period and on the initiating visit's date."""
        t = self.tables.get("visits")
        if t is None:
            return None
        day_column = next((c for c in t.c if isinstance(c.type, Date)), None)
        key = next((c.name for c in t.primary_key.columns if c.name != "org_id"), None)
        query = select(t).where(t.c.org_id == self.org_id, t.c.patient_id == patient_id)
        initiating = enrollment.record.get("initiating_visit_date") if enrollment else None
        keep = []
        for row in self.conn.execute(query).mappings():
            record, after = self.as_run(t.name, str(row[key]), _safe(row)) if key else (_safe(row), [])
            if record is None:
                continue
            day = str(record.get(day_column.name)) if day_column is not None else ""
            if day_column is None or start.isoformat() <= day <= end.isoformat() or day == initiating:
                keep.append(Visit(record=record, after_run=after))
        keep.sort(
            key=lambda v: (
                str(v.record.get(day_column.name)) if day_column is not None else "",
                str(v.record),
            )
        )
        return keep


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _decision_of(decisions: list[dict[str, Any]], line: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored billable decision a line was made from (same enrollment, code, period, DOS)."""
    for d in decisions:
        if (
            d.get("status") == "billable"
            and d.get("code") == line["code"]
            and d.get("enrollment_id") == line["enrollment_id"]
            and d["period"]["start"] == line["period_start"]
            and d.get("date_of_service") == line["date_of_service"]
        ):
            return d
    return None


def _evidence(
    decision: Mapping[str, Any], decisions: Sequence[Mapping[str, Any]] = ()
) -> tuple[set[date], list[str], list[str], set[str], set[str], str | None]:
    """Counted days, their devices, every device cited, counted and live-call time entries,
    and an add-on's base code.

    Days of data are the dates of a day count (a reason whose values give ``days``), and
    their devices that count's; the consent's, the order's or the set-up's date is cited
    without one (the set-up's device is cited, and listed, but supplies no counted day). An add-on counts
    the minutes of its base code: its entries are the base decision's (same enrollment and
    period), and the base code is returned so the packet can say so.
    """
    days: set[date] = set()
    day_devices: list[str] = []
    devices: list[str] = []
    entries: set[str] = set()
    calls: set[str] = set()
    base: str | None = None
    for r in decision.get("reasons", []):
        e = r.get("evidence") or {}
        values = e.get("values") or {}
        if "days" in values:
            days.update(date.fromisoformat(x) for x in e.get("dates", ()))
            day_devices += [x for x in e.get("device_ids", []) if x not in day_devices]
        devices += [x for x in e.get("device_ids", []) if x not in devices]
        entries.update(e.get("time_entry_ids", []))
        calls.update(e.get("interactive_entry_ids", []))
        if "base_code" in values and "minutes" in values:
            base = str(values["base_code"])
    if base is not None and not entries:
        for d in decisions:
            if (
                d.get("code") == base
                and d.get("enrollment_id") == decision.get("enrollment_id")
                and d["period"]["start"] == decision["period"]["start"]
            ):
                _, _, _, entries, calls, _ = _evidence(d)
                break
    return days, day_devices, devices, entries, calls, base
