"""Care staff pages served from a synthetic practice: worklist, patients, patient, time, alerts.

One practice per database (SQLite, PostgreSQL), signed in through the real form. Tests
read what a page shows from its HTML and what was stored from the services, and each
works on its own patients so their order does not matter.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from html import unescape
from zoneinfo import ZoneInfo

from sqlalchemy import select

from caretally.services import audit
from caretally.services.context import cli_actor
from caretally.store import schema
from tests.web.webapp import LOCKED, ORG, TODAY, CareWorld, csrf_of

ROW = re.compile(r'<tr>\s*<th scope="row"[^>]*><a href="/patients/([^"]+)">')


def worklist_rows(html: str) -> list[str]:
    return ROW.findall(html)


def row_text(html: str, patient_id: str) -> str:
    """The text of the worklist row(s) of one patient, tags removed."""
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    found = [r for r in rows if f'href="/patients/{patient_id}"' in r]
    assert found, f"{patient_id} is not on the worklist"
    return " | ".join(unescape(re.sub(r"<[^>]+>", " ", r)) for r in found)


def events(world: CareWorld, action: str) -> list[audit.AuditEvent]:
    found, _ = audit.list_events(world.engine, cli_actor(ORG), audit.EventFilter(action=action), limit=200)
    return found


def test_worklist_is_a_ranked_table_with_filters_and_is_audited(care_world: CareWorld) -> None:
    nurse = care_world.signed_in("care_staff")
    answer = nurse.get(f"/worklist?as_of={TODAY}")
    assert answer.status_code == 200
    html = answer.text
    for column in ("Patient", "Program", "Deadline", "Days", "Minutes", "Live call", "Next step"):
        assert ('<th scope="col"' in html and f">{column}</th>" in html) or f">{column}<" in html
    shown = worklist_rows(html)
    assert shown, "the practice has open periods mid-September"
    assert re.search(r"(more days? of readings|live call|more minutes?) ", html), "steps are in words"
    # the program filter keeps that program only
    ccm = nurse.get(f"/worklist?as_of={TODAY}&program=CCM").text
    programs = re.findall(r'<th scope="row"[^>]*><a href="/patients/[^"]+">.*?</th>\s*<td>([A-Z]+)</td>', ccm)
    assert programs and set(programs) == {"CCM"}
    # the staff filter offers the practitioners on the list, and narrows it
    options = re.findall(r'<option value="([^"]+)"[^>]*>[^<]+\(', html)
    assert options
    narrowed = nurse.get(f"/worklist?as_of={TODAY}&staff={options[0]}").text
    assert len(worklist_rows(narrowed)) <= len(shown)
    read = events(care_world, "worklist.read")
    assert read and set(shown) <= set(read[0].patient_ids) | {p for e in read for p in e.patient_ids}


def test_a_patients_rows_sit_together_on_the_worklist(care_world: CareWorld) -> None:
    """A patient with RPM has a 30-day device row and a calendar-month row: time and the
    call land on the month row, so it must be beside the device row, not pages away."""
    nurse = care_world.signed_in("care_staff")
    for query in ("", "&program=RPM"):
        shown = worklist_rows(nurse.get(f"/worklist?as_of={TODAY}{query}").text)
        runs = [pid for i, pid in enumerate(shown) if i == 0 or shown[i - 1] != pid]
        assert len(runs) == len(set(runs)), f"a patient's rows are apart: {shown}"
        assert len(shown) > len(runs), "some patient has two open periods"


def test_patients_are_found_by_name_and_paged(care_world: CareWorld) -> None:
    nurse = care_world.signed_in("care_staff")
    html = nurse.get("/patients").text
    first = re.search(r'<a href="/patients/([^"]+)">([^<]+)</a>', html)
    assert first is not None
    family = unescape(first.group(2)).split(",")[0]
    found = nurse.get("/patients", params={"q": family}).text
    assert f'href="/patients/{first.group(1)}"' in found
    assert "No patient matches." in nurse.get("/patients", params={"q": "zzzz-nobody"}).text


def test_the_patient_page_shows_the_month_and_its_view_is_audited(care_world: CareWorld) -> None:
    nurse = care_world.signed_in("care_staff")
    pid = worklist_rows(nurse.get(f"/worklist?as_of={TODAY}&program=RPM").text)[0]
    answer = nurse.get(f"/patients/{pid}?as_of={TODAY}")
    assert answer.status_code == 200
    html = answer.text
    assert html.count("<h1") == 1 and 'role="img"' in html  # charts are SVG with a role
    assert "30-day period" in html and "Programs" in html and "Consent" in html
    assert "<details" in html  # decisions open to their reasons
    assert f'href="/patients/{pid}/time"' in html
    viewed = events(care_world, "patient.view")
    assert any(pid in e.patient_ids and e.resource == f"patients/{pid}" for e in viewed)
    assert nurse.get("/patients/NOPE-404?as_of=2026-09-20").status_code == 404


def test_the_timer_is_kept_on_the_server_and_its_time_changes_the_worklist(care_world: CareWorld) -> None:
    nurse = care_world.signed_in("care_staff")
    before = nurse.get(f"/worklist?as_of={TODAY}&program=RPM").text
    pid = worklist_rows(before)[-1]
    page = nurse.get(f"/patients/{pid}/time")
    token = csrf_of(page.text)
    assert ">Start timer</button>" in page.text
    started = nurse.post(
        f"/patients/{pid}/timer", data={"csrf_token": token, "action": "start", "patient_id": pid}
    )
    assert started.status_code == 303
    # a second tab (another client with the same session) sees the same running timer
    tab = care_world.client()
    tab.cookies.update(nurse.cookies)
    second = tab.get(f"/patients/{pid}/time").text
    assert ">Pause timer</button>" in second and ">Stop timer</button>" in second
    assert 'data-state="running"' in second
    # starting twice is refused (one timer per user and patient)
    again = nurse.post(f"/patients/{pid}/timer", data={"csrf_token": token, "action": "start"})
    assert again.status_code == 409
    nurse.post(f"/patients/{pid}/timer", data={"csrf_token": token, "action": "pause"})
    assert ">Resume timer</button>" in nurse.get(f"/patients/{pid}/time").text
    stopped = nurse.post(f"/patients/{pid}/timer", data={"csrf_token": token, "action": "stop"})
    assert stopped.status_code == 303 and "started_at=" in stopped.headers["location"]
    assert ">Start timer</button>" in nurse.get(f"/patients/{pid}/time").text
    # the nurse logs a live call in the open period; the worklist row changes
    saved = nurse.post(
        f"/patients/{pid}/time",
        data={
            "csrf_token": token,
            "patient_id": pid,
            "program": "RPM",
            "activity": "reviewed readings, called the patient",
            "started_at": f"{TODAY}T10:00",
            "minutes": "25",
            "interactive": "true",
            "modality": "phone",
            "note": "",
        },
    )
    assert saved.status_code == 303, saved.text[-800:]
    after = nurse.get(f"/worklist?as_of={TODAY}&program=RPM").text
    assert row_text(after, pid) != row_text(before, pid) if pid in worklist_rows(after) else True
    with care_world.engine.connect() as conn:
        stored = conn.execute(
            select(schema.time_entries).where(
                schema.time_entries.c.patient_id == pid, schema.time_entries.c.entry_id.like("web-%")
            )
        ).all()
    assert [(s.seconds, s.interactive, s.practitioner_id) for s in stored] == [
        (1500, True, care_world.nurse_practitioner)
    ]


def test_bad_time_is_shown_on_the_form_and_a_locked_month_names_its_run(care_world: CareWorld) -> None:
    nurse = care_world.signed_in("care_staff")
    pid = worklist_rows(nurse.get(f"/worklist?as_of={TODAY}").text)[0]
    token = csrf_of(nurse.get(f"/patients/{pid}/time").text)
    base = {"csrf_token": token, "patient_id": pid, "program": "", "activity": "chart review", "note": ""}
    bad = nurse.post(f"/patients/{pid}/time", data={**base, "started_at": f"{TODAY}T09:00", "minutes": "0"})
    assert bad.status_code == 422 and 'aria-invalid="true"' in bad.text and "whole minutes" in bad.text
    locked = nurse.post(
        f"/patients/{pid}/time", data={**base, "started_at": f"{LOCKED}-15T09:00", "minutes": "5"}
    )
    assert locked.status_code == 409
    assert care_world.lock_run in locked.text
    # a correction of an entry in the locked month is refused too, naming the run
    with care_world.engine.connect() as conn:
        old = conn.execute(
            select(schema.time_entries.c.entry_id, schema.time_entries.c.patient_id).where(
                schema.time_entries.c.local_date >= date.fromisoformat(f"{LOCKED}-01"),
                schema.time_entries.c.local_date <= date.fromisoformat(f"{LOCKED}-30"),
            )
        ).first()
    assert old is not None
    form = nurse.get(f"/time-entries/{old.entry_id}")
    assert form.status_code == 200 and ">Save correction</button>" in form.text
    refused = nurse.post(
        f"/time-entries/{old.entry_id}",
        data={**base, "patient_id": old.patient_id, "started_at": f"{LOCKED}-16T09:00", "minutes": "12"},
    )
    assert refused.status_code == 409 and care_world.lock_run in refused.text


def test_a_correction_is_an_audited_amendment(care_world: CareWorld) -> None:
    nurse = care_world.signed_in("care_staff")
    pid = worklist_rows(nurse.get(f"/worklist?as_of={TODAY}").text)[1]
    token = csrf_of(nurse.get(f"/patients/{pid}/time").text)
    data = {"csrf_token": token, "patient_id": pid, "program": "", "activity": "chart review", "note": ""}
    saved = nurse.post(f"/patients/{pid}/time", data={**data, "started_at": f"{TODAY}T08:00", "minutes": "7"})
    assert saved.status_code == 303
    with care_world.engine.connect() as conn:
        made = conn.execute(
            select(schema.time_entries.c.entry_id).where(
                schema.time_entries.c.patient_id == pid, schema.time_entries.c.seconds == 420
            )
        ).scalar_one()
    fixed = nurse.post(f"/time-entries/{made}", data={**data, "started_at": f"{TODAY}T08:00", "minutes": "9"})
    assert fixed.status_code == 303
    with care_world.engine.connect() as conn:
        change = conn.execute(
            select(schema.audit_changes).where(schema.audit_changes.c.record_key == made)
        ).one()
    assert change.old_values == {"seconds": 420} and change.new_values == {"seconds": 540}
    assert change.actor.startswith("user:")


def test_log_time_speaks_the_patients_zone_and_starts_at_now(care_world: CareWorld) -> None:
    """ "Started at" is read in the patient's zone: the form says which, starts on now in
    it, and the time log shows entries on the same clock (not UTC)."""
    nurse = care_world.signed_in("care_staff")
    shown = worklist_rows(nurse.get(f"/worklist?as_of={TODAY}").text)
    with care_world.engine.connect() as conn:
        zones = dict(conn.execute(select(schema.patients.c.patient_id, schema.patients.c.timezone)).all())
    pid = next(p for p in shown if zones[p] not in ("UTC", "Etc/UTC"))
    tz = zones[pid]
    page = unescape(nurse.get(f"/patients/{pid}/time").text)
    assert f"In the patient's time zone, {tz}." in page
    # a running timer's start is on the same clock
    token = csrf_of(page)
    nurse.post(f"/patients/{pid}/timer", data={"csrf_token": token, "action": "start"})
    running = unescape(nurse.get(f"/patients/{pid}/time").text)
    assert f"(patient's time, {tz})" in running.split("Running since", 1)[1].split("</p>", 1)[0]
    nurse.post(f"/patients/{pid}/timer", data={"csrf_token": token, "action": "stop"})
    field = re.search(r'<input[^>]*name="started_at"[^>]*>', page)
    assert field, "no Started at input"
    prefilled = re.search(r'value="([^"]*)"', field.group(0))
    assert prefilled and prefilled.group(1), "a manual entry starts with a time"
    now_there = datetime.now(UTC).astimezone(ZoneInfo(tz)).replace(tzinfo=None, second=0, microsecond=0)
    assert abs(datetime.fromisoformat(prefilled.group(1)) - now_there) <= timedelta(minutes=2)
    # an entry typed at 07:05 the patient's time is listed at 07:05, under a header naming the zone
    saved = nurse.post(
        f"/patients/{pid}/time",
        data={
            "csrf_token": csrf_of(page),
            "patient_id": pid,
            "program": "",
            "activity": "zone check",
            "started_at": f"{TODAY}T07:05",
            "minutes": "6",
            "note": "",
        },
    )
    assert saved.status_code == 303
    patient = unescape(nurse.get(f"/patients/{pid}?as_of={TODAY}").text)
    assert f"When (patient's time, {tz})" in patient and "When (UTC)" not in patient
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", patient, re.S) if "zone check" in r)
    assert f"{TODAY:%b} {TODAY.day} 07:05" in re.sub(r"<[^>]+>", " ", row)


def test_time_without_a_linked_practitioner_is_refused_with_the_way_out(care_world: CareWorld) -> None:
    admin = care_world.signed_in("admin")  # admins may log time, but this one is not linked
    pid = worklist_rows(admin.get(f"/worklist?as_of={TODAY}").text)[0]
    page = admin.get(f"/patients/{pid}/time")
    shown = unescape(page.text)
    # the page says who links the account and where, before the user types anything
    assert "not linked to a practitioner" in shown
    assert "ask an admin to link it" in shown and "Admin page" in shown
    assert "“Who logs time as which practitioner”" in shown and "Link practitioner" in shown
    answer = admin.post(
        f"/patients/{pid}/time",
        data={
            "csrf_token": csrf_of(page.text),
            "patient_id": pid,
            "program": "",
            "activity": "x",
            "started_at": f"{TODAY}T08:00",
            "minutes": "5",
            "note": "",
        },
    )
    assert answer.status_code == 409 and "Ask an admin" in answer.text
    refused = unescape(answer.text)
    assert "“Who logs time as which practitioner”" in refused and "--practitioner ID" in refused
    # the form it names is on the Admin page, with the button it names
    admin_page = unescape(admin.get("/admin").text)
    assert "Who logs time as which practitioner" in admin_page and ">Link practitioner</button>" in admin_page


def test_a_form_without_its_token_changes_nothing(care_world: CareWorld) -> None:
    nurse = care_world.signed_in("care_staff")
    pid = worklist_rows(nurse.get(f"/worklist?as_of={TODAY}").text)[0]
    answer = nurse.post(f"/patients/{pid}/timer", data={"action": "start", "patient_id": pid})
    assert answer.status_code == 403
    assert ">Start timer</button>" in nurse.get(f"/patients/{pid}/time").text


def test_alerts_come_from_thresholds_and_close_when_acknowledged(care_world: CareWorld) -> None:
    nurse = care_world.signed_in("care_staff")
    page = nurse.get("/alerts")
    assert "No thresholds set" in page.text and "No open alerts." in page.text
    token = csrf_of(page.text)
    # a threshold every recent reading of the kind crosses, so alerts exist whatever was synthesized
    with care_world.engine.connect() as conn:
        kinds = {k for (k,) in conn.execute(select(schema.readings.c.type).distinct())}
    kind = "glucose" if "glucose" in kinds else "weight" if "weight" in kinds else sorted(kinds)[0]
    measure = "blood_pressure.systolic" if kind == "blood_pressure" else kind
    bad = nurse.post("/alerts/thresholds", data={"csrf_token": token, "program": "RPM", "measure": measure})
    assert bad.status_code == 422 and "at least one bound" in bad.text
    added = nurse.post(
        "/alerts/thresholds",
        data={"csrf_token": token, "program": "RPM", "measure": measure, "at_or_above": "0"},
    )
    assert added.status_code == 303
    html = nurse.get(f"/alerts?as_of={TODAY}").text
    ids = re.findall(r'action="/alerts/([0-9]+-[0-9]+)/acknowledge\?as_of=[0-9-]+"', html)
    assert "not medical advice" in html and "at or above 0" in html
    assert len(ids) >= 2, "every recent reading of the measure crosses 'at or above 0'"
    done = nurse.post(
        f"/alerts/{ids[0]}/acknowledge?as_of={TODAY}", data={"csrf_token": token, "note": "called, all well"}
    )
    assert done.status_code == 303 and done.headers["location"] == f"/alerts?as_of={TODAY}"
    assert f"/alerts/{ids[0]}/acknowledge" not in nurse.get(f"/alerts?as_of={TODAY}").text
    # "Log as time" acknowledges and goes on to the time form, filled in
    logged = nurse.post(
        f"/alerts/{ids[1]}/acknowledge?as_of={TODAY}",
        data={"csrf_token": token, "note": "", "log_time": "true"},
    )
    assert logged.status_code == 303 and "/time?alert=" in logged.headers["location"]
    form = nurse.get(logged.headers["location"]).text
    assert "Reviewed alert" in form and 'name="alert"' in form
    with care_world.engine.connect() as conn:
        acks = conn.execute(select(schema.alert_acknowledgements)).all()
    assert {a.note for a in acks} >= {"called, all well", None}
    assert all(a.acknowledged_by.startswith("user:") for a in acks)
    # the patient's page draws the threshold as a band over the readings
    pid = acks[0].patient_id
    assert "at or above 0" in nurse.get(f"/patients/{pid}?as_of={TODAY}").text
    # removing the threshold closes its alerts; the row stays with when it was removed
    removal = re.search(r'action="(/alerts/thresholds/[0-9]+/remove)"', nurse.get("/alerts").text)
    assert removal is not None
    assert nurse.post(removal.group(1), data={"csrf_token": token}).status_code == 303
    after = nurse.get(f"/alerts?as_of={TODAY}").text
    assert "No open alerts." in after and "No thresholds set" in after
    with care_world.engine.connect() as conn:
        kept = conn.execute(select(schema.alert_thresholds.c.removed_at)).all()
    assert kept and all(r.removed_at is not None for r in kept)


def test_a_biller_reads_a_patients_month_but_not_the_care_pages(care_world: CareWorld) -> None:
    """An integration account cannot sign in to pages at all (tests/web/test_app.py)."""
    nurse = care_world.signed_in("care_staff")
    pid = worklist_rows(nurse.get(f"/worklist?as_of={TODAY}&program=RPM").text)[0]
    biller = care_world.signed_in("biller")
    assert biller.get(f"/worklist?as_of={TODAY}").status_code == 403
    assert biller.get("/patients").status_code == 403
    assert biller.get("/alerts").status_code == 403
    assert biller.get(f"/patients/{pid}/time").status_code == 403
    month = biller.get(f"/patients/{pid}?as_of={TODAY}")  # why a code was or was not billed
    assert month.status_code == 200 and "<details" in month.text
    assert f'href="/patients/{pid}/time"' not in month.text  # no link to a page it may not use
    assert 'href="/patients"' not in month.text and 'href="/month-close"' in month.text
