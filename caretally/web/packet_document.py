"""An audit packet's page from its JSON twin, and the packet as one self-contained HTML file.

The page is built from the packet's JSON (``services/packets.py``, ``docs/packets.md``)
and nothing else, so every number the HTML shows is one the JSON holds. The sections
are the web page's (``views.packet_sections``: patient, enrollment, counted days, minutes
and the live call, rule checks, run and digests) plus what only the packet carries:
devices, each time entry from start to stop with its performer's credential and
employment, visits, the numbers the line was judged on, and what changed after the run.

:func:`packet_html` renders ``documents/packet.html``: the stylesheets inline, no script
and no URL fetched, so the file prints the same anywhere and years later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Template
from markupsafe import Markup

from caretally.model import ClaimLine, Payer, Program
from caretally.web import views
from caretally.web.phrasing import money
from caretally.web.templating import STATIC_DIR, environment, long_date, when
from caretally.web.viewmodels import Badge, Cell, Column, DataTable, PacketPage, Section, Tone
from caretally.web.views import ReadingRow, TimeLogRow


def claim_line(line: Mapping[str, Any], run_id: str) -> ClaimLine:
    """The packet's ``line`` as the engine's claim line (what ``packet_sections`` reads)."""
    return ClaimLine(
        patient_id=line["patient_id"],
        code=line["code"],
        units=line["units"],
        date_of_service=date.fromisoformat(line["date_of_service"]),
        period_start=date.fromisoformat(line["period_start"]),
        period_end=date.fromisoformat(line["period_end"]),
        billing_npi=line["billing_npi"],
        rendering_npi=line["rendering_npi"],
        diagnosis_codes=tuple(line["diagnosis_codes"]),
        place_of_service=line["place_of_service"],
        modifiers=tuple(line["modifiers"]),
        charge=Decimal(line["charge"]),
        expected_payment=Decimal(line["expected_payment"]),
        run_id=run_id,
        enrollment_id=line["enrollment_id"],
        program=Program(line["program"]),
        payer=Payer(line["payer"]),
        member_id=line["member_id"],
    )


def _zone(name: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _instant(text: Any) -> datetime | None:
    return datetime.fromisoformat(str(text)) if text else None


def _day(text: Any) -> str:
    return long_date(date.fromisoformat(str(text))) if text else "—"


def _practitioner(p: Mapping[str, Any] | None, fallback: str = "—") -> str:
    if not p:
        return fallback
    return f"{p.get('name') or p['practitioner_id']} ({p.get('credential') or '?'})"


def packet_page_of(doc: Mapping[str, Any], json_href: str) -> PacketPage:
    """The packet page for one packet's JSON (``Packet.model_dump(mode="json")``)."""
    run, line_json, decision = doc["run"], doc["line"], doc["decision"]
    line = claim_line(line_json, run["run_id"])
    patient = doc["patient"]["record"]
    zone = _zone(patient.get("timezone"))
    line_facts: tuple[tuple[str, Cell], ...] = (
        ("Line", f"{line_json['number']} of run {run['run_id']}"),
        (
            "Code",
            f"{line.code} × {line.units}" + (f" ({', '.join(line.modifiers)})" if line.modifiers else ""),
        ),
        ("Date of service", long_date(line.date_of_service)),
        ("Period", f"{long_date(line.period_start)} – {long_date(line.period_end)}"),
        ("Program", line.program.value),
        ("Payer", views.payer_words(line.payer.value)),
        ("Billing NPI", line.billing_npi or "—"),
        ("Rendering NPI", line.rendering_npi or "—"),
        ("Diagnoses", ", ".join(line.diagnosis_codes)),
        ("Place of service", line.place_of_service),
        ("Charge", money(line.charge)),
        ("Expected payment", money(line.expected_payment)),
        ("Status in the run", views.status_badge(decision.get("status", "not stored"))),
    )
    name = " ".join(x for x in (patient.get("given_name"), patient.get("family_name")) if x)
    patient_facts: list[tuple[str, Cell]] = [
        ("Name", name or "—"),
        ("Patient id", line.patient_id),
        ("Born", _day(patient.get("birth_date"))),
        ("Payer", views.payer_words(str(patient.get("payer") or line.payer.value))),
        ("Member id", patient.get("member_id") or "—"),
        ("Time zone", patient.get("timezone") or "—"),
    ]
    if "death_date" in patient:
        patient_facts.append(("Date of death", _day(patient.get("death_date"))))
    sections = list(
        views.packet_sections(
            line=line,
            decision={"reasons": [], "parameters": [], **decision},
            run_facts=_run_facts(run),
            patient_facts=patient_facts,
            enrollment_facts=_enrollment_facts(doc.get("enrollment"), line.enrollment_id),
            readings=_reading_rows(doc, zone),
            entries=_entry_rows(doc),
        )
    )
    extra = [
        _numbers(doc),
        *_all_readings(doc, zone),
        *_devices(doc),
        *_times(doc),
        *_visits(doc),
        *_changes(doc),
    ]
    at = next((i for i, s in enumerate(sections) if s.anchor == "rules"), len(sections))
    sections[at:at] = extra
    title = f"Claim line {line.code} for {line.patient_id}, {long_date(line.date_of_service)}"
    return PacketPage(title, line_facts, tuple(sections), json_href)


def _run_facts(run: Mapping[str, Any]) -> tuple[tuple[str, Cell], ...]:
    provisional = run.get("provisional")
    return (
        ("Run", run["run_id"]),
        ("Month", run["month"]),
        ("Status", views.status_badge(run["status"])),
        ("Created", when(_instant(run["created_at"]))),
        ("Locked", when(_instant(run["locked_at"])) if run.get("locked_at") else "Not locked"),
        ("Amends run", run.get("amends_run_id") or "—"),
        (
            "Rule-year",
            Badge(f"Proposed: {', '.join(provisional.get('rule_years') or [])}", Tone.WARN)
            if provisional
            else "Final",
        ),
        ("Engine version", run["engine_version"]),
        ("Rules digest", run["ruleset_hash"]),
        ("Input digest", run["input_digest"]),
        ("Lines digest", run["lines_digest"]),
        ("Decisions digest", run.get("decisions_digest") or "—"),
        ("Patient's facts digest", run.get("facts_digest") or "—"),
    )


def _enrollment_facts(part: Mapping[str, Any] | None, enrollment_id: str) -> tuple[tuple[str, Cell], ...]:
    if not part:
        return (("Enrollment", Badge(f"{enrollment_id}: no longer stored", Tone.BAD)),)
    e = part["record"]
    span = _day(e.get("start_date")) + (f" – {_day(e.get('end_date'))}" if e.get("end_date") else "")
    return (
        ("Enrollment", e["enrollment_id"]),
        ("Program", e.get("program") or "—"),
        ("Enrolled", span),
        ("Consent", _day(e["consent_date"]) if e.get("consent_date") else Badge("Missing", Tone.BAD)),
        ("Order", _day(e["order_date"]) if e.get("order_date") else Badge("Not on file", Tone.WARN)),
        ("Initiating visit", _day(e.get("initiating_visit_date"))),
        ("Established patient", views.yes_no(e.get("established_patient"))),
        (
            "Billing practitioner",
            _practitioner(part.get("billing_practitioner"), e.get("billing_practitioner_id")),
        ),
        ("Diagnoses", ", ".join(x for x in str(e.get("diagnoses") or "").split(";") if x)),
        ("Complexity", e.get("complexity") or "—"),
    )


def _reading_rows(doc: Mapping[str, Any], zone: ZoneInfo) -> list[ReadingRow]:
    out = []
    for day in doc["counted_days"]:
        for r in day["readings"]:
            rec = r["record"]
            at = _instant(rec.get("measured_at"))
            if at is None:
                continue
            out.append(
                ReadingRow(
                    reading_id=str(rec.get("reading_id") or rec.get("reading_key")),
                    measured_local=at.astimezone(zone),
                    kind=str(rec.get("type")),
                    value=str(rec.get("value")),
                    unit=str(rec.get("unit")),
                    manual=rec.get("transmission") == "manual",
                    device_id=str(rec.get("device_id") or ""),
                )
            )
    return out


def _entry_rows(doc: Mapping[str, Any]) -> list[TimeLogRow]:
    out = []
    for e in doc["time_entries"]:
        rec, who = e["record"], e.get("performer") or {}
        started = _instant(rec.get("started_at"))
        if started is None:
            continue
        out.append(
            TimeLogRow(
                entry_id=str(rec["entry_id"]),
                started_at=started,
                seconds=int(rec.get("seconds") or 0),
                performer=str(who.get("name") or rec.get("practitioner_id")),
                credential=str(who.get("credential") or "?"),
                program=rec.get("program"),
                activity=rec.get("activity"),
                interactive=bool(rec.get("interactive")),
                modality=rec.get("modality"),
            )
        )
    return out


#: The measures an auditor checks a line against, in reading order: label, measure name.
MEASURES = (
    ("Days with data", "days"),
    ("Days required", "min_days"),
    ("Minutes counted", "minutes"),
    ("Seconds counted", "seconds"),
    ("Minutes required", "min_minutes"),
    ("Minutes allowed at most", "max_minutes"),
    ("Minutes the next unit needs", "next_unit_minutes"),
)


def _numbers(doc: Mapping[str, Any]) -> Section:
    d, line = doc["decision"], doc["line"]
    measures = d.get("measures") or {}
    rows: list[tuple[str, Cell]] = [
        ("Units", str(line["units"])),
        ("Date of service", _day(line["date_of_service"])),
        ("Period", f"{_day(line['period_start'])} – {_day(line['period_end'])}"),
    ]
    rows += [(label, str(measures[key])) for label, key in MEASURES if key in measures]
    if "interactive" in measures:
        rows.append(("Live interactive contact", views.yes_no(measures["interactive"])))
    rows += [
        ("Charge", money(Decimal(line["charge"]))),
        ("Expected payment", money(Decimal(line["expected_payment"]))),
        ("Rule-year", d.get("rule_year") or "not recorded"),
    ]
    if d.get("provisional"):
        rows.append(("Judged by", Badge("a proposed rule-year, not final", Tone.WARN)))
    return Section("Numbers the line was judged on", facts=tuple(rows), anchor="numbers")


#: The web page's day table shows this many readings a day; a packet lists them all below it.
SHOWN_PER_DAY = 4


def _all_readings(doc: Mapping[str, Any], zone: ZoneInfo) -> list[Section]:
    """Every reading of the counted days, when the day table had to leave some out."""
    days = doc["counted_days"]
    if not any(len(d["readings"]) > SHOWN_PER_DAY for d in days):
        return []
    rows = []
    for d in days:
        for r in d["readings"]:
            rec = r["record"]
            at = _instant(rec.get("measured_at"))
            rows.append(
                (
                    str(rec.get("reading_id") or rec.get("reading_key")),
                    f"{at.astimezone(zone):%Y-%m-%d %H:%M}" if at else "—",
                    str(rec.get("type")),
                    f"{rec.get('value')} {rec.get('unit')}",
                    str(rec.get("device_id") or "—"),
                    str(rec.get("transmission") or "—"),
                )
            )
    table = DataTable(
        caption=f"{len(rows)} readings on the counted days (patient's local time)",
        columns=(
            Column("Reading"),
            Column("When", nowrap=True),
            Column("Type"),
            Column("Value"),
            Column("Device"),
            Column("Sent"),
        ),
        rows=tuple(rows),
    )
    return [Section("Every reading of the counted days", tables=(table,), anchor="readings")]


def _devices(doc: Mapping[str, Any]) -> list[Section]:
    devices = doc["devices"]
    if not devices:
        return []
    rows = tuple(
        (
            str(x["record"].get("device_id")),
            str(x["record"].get("kind") or "—"),
            views.yes_no(x["record"].get("medical_device")),
            _day(x["record"].get("assigned_date")),
            _day(x["record"].get("setup_date")),
            _day(x["record"].get("returned_date")),
            str(x["record"].get("hardware_id") or "—"),
        )
        for x in devices
    )
    table = DataTable(
        caption="Devices that supplied the counted days",
        columns=(
            Column("Device"),
            Column("Kind"),
            Column("Medical device"),
            Column("Assigned", nowrap=True),
            Column("Set up", nowrap=True),
            Column("Returned", nowrap=True),
            Column("Serial"),
        ),
        rows=rows,
    )
    return [Section("Devices", tables=(table,), anchor="devices")]


def _times(doc: Mapping[str, Any]) -> list[Section]:
    entries = doc["time_entries"]
    if not entries:
        return []
    # Employment is shown only when the store records it (practitioners.employment).
    employment = any((e.get("performer") or {}).get("employment") for e in entries)
    rows = []
    for e in entries:
        rec, who = e["record"], e.get("performer") or {}
        seconds = int(rec.get("seconds") or 0)
        rows.append(
            (
                str(rec["entry_id"]),
                str(who.get("name") or rec.get("practitioner_id")),
                str(who.get("credential") or "?"),
                str(who.get("performer_class") or "—"),
                *((str(who.get("employment") or "not recorded"),) if employment else ()),
                when(_instant(rec.get("started_at"))),
                when(_instant(e.get("stopped_at"))),
                f"{seconds // 60}:{seconds % 60:02d}",
                str(rec.get("modality") or "—"),
                Badge("Live call", Tone.GOOD) if e.get("live_call") else "—",
            )
        )
    total = sum(int(e["record"].get("seconds") or 0) for e in entries)
    table = DataTable(
        caption=f"Time entries counted: {total // 60}:{total % 60:02d} in all",
        columns=(
            Column("Entry"),
            Column("Performer"),
            Column("Credential"),
            Column("Performer class"),
            *((Column("Employment"),) if employment else ()),
            Column("Start", nowrap=True),
            Column("Stop", nowrap=True),
            Column("Duration", numeric=True),
            Column("Modality"),
            Column("Live call"),
        ),
        rows=tuple(rows),
    )
    return [Section("Who furnished the minutes, start to stop", tables=(table,), anchor="performers")]


def _visits(doc: Mapping[str, Any]) -> list[Section]:
    visits = doc.get("visits")
    if visits is None:
        return []
    if not visits:
        note = "No visit recorded in the line's period or on the initiating visit's date."
        return [Section("Visits", note=note, anchor="visits")]
    names = sorted({k for v in visits for k in v["record"] if k != "patient_id"})
    table = DataTable(
        caption="Visits in the period and the initiating visit",
        columns=tuple(Column(n.replace("_", " ").capitalize()) for n in names),
        rows=tuple(
            tuple(str(v["record"].get(n) if v["record"].get(n) is not None else "—") for n in names)
            for v in visits
        ),
        empty="No visit recorded in the period.",
    )
    return [Section("Visits", tables=(table,), anchor="visits")]


def _changes(doc: Mapping[str, Any]) -> list[Section]:
    rows: list[tuple[Cell, ...]] = []

    def add(what: str, after: Sequence[Mapping[str, Any]]) -> None:
        for a in after:
            if a["kind"] == "retracted":
                detail = f"retracted: {a.get('reason') or 'no reason given'}"
            else:
                detail = "; ".join(
                    f"{name}: {change.get('at_run')} then, {change.get('now')} now"
                    for name, change in a["fields"].items()
                )
            rows.append((what, when(_instant(a["changed_at"])), Badge(a["kind"], Tone.WARN), detail))

    add(f"patient {doc['line']['patient_id']}", doc["patient"].get("after_run", []))
    if doc.get("enrollment"):
        add(f"enrollment {doc['line']['enrollment_id']}", doc["enrollment"].get("after_run", []))
    for day in doc["counted_days"]:
        for r in day["readings"]:
            add(f"reading {r['record'].get('reading_key')}", r.get("after_run", []))
    for x in doc["devices"]:
        add(f"device {x['record'].get('device_id')}", x.get("after_run", []))
    for e in doc["time_entries"]:
        add(f"time entry {e['record'].get('entry_id')}", e.get("after_run", []))
    for v in doc.get("visits") or []:
        add(f"visit {v['record'].get('visit_id', '')}".strip(), v.get("after_run", []))
    notes = doc.get("notes") or []
    if not rows and not notes:
        return []
    table = DataTable(
        caption="Records changed after the run (the packet shows the values the run saw)",
        columns=(
            Column("Record"),
            Column("When", nowrap=True),
            Column("Change"),
            Column("Detail", wide=True),
        ),
        rows=tuple(rows),
        empty="No record behind this line changed after the run.",
    )
    return [
        Section(
            "Notes and changes since the run",
            tables=(table,),
            note=" ".join(f"{n}." for n in notes) or None,
            anchor="changes",
        )
    ]


@cache
def _css(name: str) -> Markup:
    # Our own stylesheet, inlined in a <style> element: it must not close the element early.
    text = (STATIC_DIR / name).read_text(encoding="utf-8")
    if "</style" in text.lower():
        raise ValueError(f"{name} cannot be inlined")
    return Markup(text)


@cache
def _template() -> Template:
    """Compiled once per process: a month's zip renders hundreds of packets."""
    return environment().get_template("documents/packet.html")


def packet_html(doc: Mapping[str, Any], json_name: str) -> str:
    """The packet as one printable, self-contained HTML file; ``json_name`` names its twin."""
    page = packet_page_of(doc, json_name)
    return _template().render(
        page=page, json_name=json_name, screen_css=_css("app.css"), print_css=_css("print.css")
    )
