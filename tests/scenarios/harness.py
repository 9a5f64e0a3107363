"""Scenario files → real imports → the real month run → compared decisions and claim lines.

A scenario is written the way a billing expert would describe a patient-month: who is
enrolled, which days had readings, what time was logged, which month is billed, and what
must come out. Nothing here shortcuts the product: records go through
``caretally.ingest.import_records`` into a real database, a closed month is billed with
``caretally.billing.run.bill_month`` (the run is stored, and the decisions compared are the
ones read back from that stored run), and claim lines are the stored lines. Only a case
judged mid-period (``as_of``) goes through ``evaluate_month``, because a month run has no
"as of".

The format is documented in ``tests/scenarios/README.md``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from sqlalchemy import Engine, insert

from caretally.billing.evaluate import evaluate_month
from caretally.billing.payers import PayerRules
from caretally.billing.run import (
    RunResult,
    bill_month,
    current_run,
    line_content,
    lock_month,
    stored_decisions,
    stored_lines,
)
from caretally.billing.serialize import decision_to_json
from caretally.dates import parse_month
from caretally.ingest import import_records
from caretally.leakage import leakage_report
from caretally.model import ClaimLine, Payer
from caretally.rules.loader import load_rulebook
from caretally.rules.params import RuleBook
from caretally.store import db, schema
from caretally.worklist import build_worklist

PRACTITIONERS = [
    {"practitioner_id": "DR1", "npi": "1234567893", "name": "Dana Reyes", "credential": "MD"},
    {"practitioner_id": "DR2", "npi": "1987654328", "name": "Omar Patel", "credential": "DO"},
    {"practitioner_id": "NP1", "npi": "1765432103", "name": "Lee Chen", "credential": "NP"},
    {"practitioner_id": "RN1", "npi": "", "name": "Ava Brooks", "credential": "RN"},
    {"practitioner_id": "MA1", "npi": "", "name": "Sam Ortiz", "credential": "MA"},
    {"practitioner_id": "PT1", "npi": "1555555550", "name": "Kim Novak", "credential": "PT"},
    {"practitioner_id": "PTA1", "npi": "1555555568", "name": "Rui Alves", "credential": "PTA"},
    {"practitioner_id": "OT1", "npi": "1555555576", "name": "Ines Berg", "credential": "OT"},
    {"practitioner_id": "OTA1", "npi": "1555555584", "name": "Tom Hale", "credential": "OTA"},
    {"practitioner_id": "SLP1", "npi": "1555555592", "name": "Mia Roth", "credential": "SLP"},
    {"practitioner_id": "SLPA1", "npi": "1666666668", "name": "Noa Frey", "credential": "SLPA"},
]
ALIASES = {"staff": "RN1", "practitioner": "DR1", "physician": "DR1", "therapist": "PT1"}
READING_DEFAULTS = {
    "blood_pressure": ("blood_pressure", "128/82", "mmHg"),
    "weight": ("weight", "182.4", "lb"),
    "glucose": ("glucose", "112", "mg/dL"),
    "pulse_oximetry": ("spo2", "96", "%"),
    "respiratory": ("inhaler_use", "2", "puffs"),
    "musculoskeletal": ("exercise_adherence", "1", "session"),
    "cognitive_behavioral": ("cbt_module", "1", "module"),
}
PERSON_KEYS = {"patient", "enrollments", "devices", "readings", "time", "history", "visits"}
CASE_KEYS = PERSON_KEYS | {
    "name", "month", "as_of", "overlay", "expect", "skip", "rules_redated", "options", "steps", "others",
    "employment",
}  # fmt: skip
STEP_KEYS = {"bill", "lock", "expect", "expect_run", "add", "expect_lock"}
ADD_KEYS = {"patient", "readings", "time"}
EXPECT_KEYS = {"billable", "not_billable", "reachable", "no_other_billable", "lines", "no_other_lines"}
EXPECT_KEYS |= {"patients", "refused", "worklist", "worklist_without", "leakage", "leakage_without"}
STEP_FIELDS = {"code", "value", "minutes_needed", "days_needed", "call_needed", "enrollment"}
MISS_FIELDS = {"code", "value", "reason", "enrollment"}
RUN_KEYS = {"outcome", "status", "lines", "problems", "provisional", "undecided"}
LOCKS = (True, "accept_provisional")
LINE_FIELDS = {
    "code", "units", "date_of_service", "period", "modifiers", "expected_payment", "charge",
    "rendering_npi", "billing_npi", "diagnosis_codes", "place_of_service", "enrollment", "patient",
    "program", "payer",
}  # fmt: skip
DECISION_FIELDS = {
    "units", "date_of_service", "period", "expected_payment", "message_contains", "evidence_entries",
    "enrollment", "reasons", "without_reasons", "provisional",
}  # fmt: skip
MAIN_PATIENT = "P1"


class ScenarioError(ValueError):
    """A scenario file that does not say what it means: fail loudly, never guess."""


@dataclass
class Case:
    file: Path
    name: str
    spec: dict[str, Any]

    @property
    def org_id(self) -> str:
        digest = hashlib.sha1(f"{self.file.name}:{self.name}".encode()).hexdigest()[:12]
        return f"sc-{digest}"


@dataclass
class Outcome:
    """What the last compared step produced, kept so a failure can show it."""

    decisions: list[dict[str, Any]] = field(default_factory=list)
    lines: list[ClaimLine] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def load_cases(path: Path) -> list[Case]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(doc) - {"defaults", "cases", "about"}
    if unknown:
        raise ScenarioError(f"{path}: unknown top-level keys {sorted(unknown)}")
    defaults = doc.get("defaults") or {}
    cases = []
    seen: set[str] = set()
    for raw in doc.get("cases") or []:
        spec = {**defaults, **raw}
        if "steps" in raw and "month" not in raw:
            spec.pop("month", None)  # each step bills its own month; a default month does not apply
        bad = set(spec) - CASE_KEYS
        if bad:
            raise ScenarioError(f"{path}: case {raw.get('name')!r} has unknown keys {sorted(bad)}")
        name = str(spec.get("name") or "").strip()
        if not name or name in seen:
            raise ScenarioError(f"{path}: every case needs a unique sentence as its name ({name!r})")
        seen.add(name)
        _check_shape(path, name, spec)
        cases.append(Case(path, name, spec))
    return cases


def _check_shape(path: Path, name: str, spec: dict[str, Any]) -> None:
    """Refuse combinations that cannot mean anything, at collection time."""
    where = f"{path}: case {name!r}"
    if "steps" in spec:
        if "month" in spec:
            raise ScenarioError(f"{where}: give either month or steps (each step bills its own month)")
        if "as_of" in spec:
            raise ScenarioError(f"{where}: as_of judges one open month; it cannot be combined with steps")
        steps = spec["steps"] or []
        for step in steps:
            bad = set(step) - STEP_KEYS
            if bad or ("bill" in step) == ("add" in step):
                raise ScenarioError(f"{where}: each step either bills a month or adds data ({step})")
            if "add" in step and set(step) != {"add"}:
                raise ScenarioError(f"{where}: an add step takes nothing but its data ({step})")
            if "add" in step and set(step["add"]) - ADD_KEYS:
                raise ScenarioError(f"{where}: add takes {sorted(ADD_KEYS)} ({step})")
        if not any("bill" in s for s in steps):
            raise ScenarioError(f"{where}: steps must bill at least one month")
    elif "month" not in spec:
        raise ScenarioError(f"{where}: needs the month billed (month) or steps")
    expect = spec.get("expect") or {}
    if "as_of" in spec and expect.get("lines"):
        raise ScenarioError(f"{where}: a mid-period case (as_of) has no month run, so no claim lines")
    if "as_of" not in spec and ("worklist" in expect or "worklist_without" in expect):
        raise ScenarioError(f"{where}: the worklist looks at open periods: give as_of")
    if "as_of" in spec and ("leakage" in expect or "leakage_without" in expect):
        raise ScenarioError(f"{where}: leakage is read from a closed month's run: drop as_of")
    for other in spec.get("others") or []:
        bad = set(other) - PERSON_KEYS
        if bad or "patient_id" not in (other.get("patient") or {}):
            raise ScenarioError(f"{where}: others need patient.patient_id and take {sorted(PERSON_KEYS)}")


# ----------------------------------------------------------------------------------------
# Building the records a practice would send.
# ----------------------------------------------------------------------------------------


def _d(value: Any) -> date:
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _days(spec: Any) -> list[date]:
    """``2026-03-01..2026-03-16``, a single date, or a list of either."""
    if isinstance(spec, list):
        return [d for item in spec for d in _days(item)]
    text = str(spec)
    if ".." in text:
        first, last = (_d(p.strip()) for p in text.split(".."))
        return [first + timedelta(n) for n in range((last - first).days + 1)]
    return [_d(text)]


def _clock(text: Any) -> time:
    return time.fromisoformat(str(text))


def _blank(value: Any) -> str:
    if value is None or value == "none":
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


@dataclass
class Person:
    """One patient of a case, and what later ``add`` steps need to know about them.

    The main patient keeps the short ids (E1, D1, T1); another patient's generated ids
    carry its patient id (``P2-E1``) because ids are unique within an organization.
    """

    patient: dict[str, str]
    prefix: str
    kinds: dict[str, str] = field(default_factory=dict)
    first_program: str = "RPM"
    first_device: str = "D1"
    entries: int = 0

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.patient["timezone"])

    @property
    def patient_id(self) -> str:
        return self.patient["patient_id"]


def _person(spec: dict[str, Any], index: int) -> Person:
    patient = {
        "patient_id": MAIN_PATIENT,
        "birth_date": "1950-04-02",
        "timezone": "America/New_York",
        "payer": "medicare",
        "member_id": "1EG4TE5MK7" + str(3 + index),
        "family_name": "Doe",
        "given_name": "Pat",
        "sex": "F",
        **{k: str(v) for k, v in (spec.get("patient") or {}).items()},
    }
    return Person(patient, "" if index == 0 else f"{patient['patient_id']}-")


def _enrollments(person: Person, spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, e in enumerate(spec.get("enrollments") or [], start=1):
        start = _d(e["start"])
        program = e["program"]
        care = program in ("CCM", "PCM", "APCM", "BHI", "COCM")
        out.append(
            {
                "enrollment_id": str(e.get("id", f"{person.prefix}E{i}")),
                "patient_id": person.patient_id,
                "program": program,
                "start_date": start.isoformat(),
                "end_date": _blank(e.get("end")),
                "consent_date": _blank(e.get("consent", start.isoformat())),
                "billing_practitioner_id": e.get("billing", "DR1"),
                "diagnoses": _blank(e.get("diagnoses", "I10;E11.9" if care else "I10")),
                "complexity": _blank(e.get("complexity")),
                "order_date": _blank(e.get("order_date", start.isoformat())),
                "established_patient": _blank(e.get("established", True)),
                "initiating_visit_date": _blank(
                    e.get("initiating_visit", start.isoformat() if care else None)
                ),
                "qmb": _blank(e.get("qmb")),
                "authorization_id": _blank(e.get("authorization")),
                "authorization_start": _blank(e.get("authorization_start")),
                "authorization_end": _blank(e.get("authorization_end")),
            }
        )
    if out:
        person.first_program = out[0]["program"]
    return out


def _devices(person: Person, spec: dict[str, Any], first_start: str | None) -> list[dict[str, Any]]:
    out = []
    for i, d in enumerate(spec.get("devices") or [], start=1):
        did = str(d.get("id", f"{person.prefix}D{i}"))
        person.kinds[did] = d.get("kind", "blood_pressure")
        assigned = d.get("assigned", first_start)
        out.append(
            {
                "device_id": did,
                "patient_id": person.patient_id,
                "program": d.get("program", person.first_program),
                "kind": person.kinds[did],
                "medical_device": _blank(d.get("medical", True)),
                "setup_date": _blank(d.get("setup", assigned)),
                "assigned_date": _blank(assigned),
                "returned_date": _blank(d.get("returned")),
            }
        )
    if out:
        person.first_device = out[0]["device_id"]
    return out


def _device_id(person: Person, given: Any) -> str:
    """A reading's device as written; a short id (D2) of another patient gets its prefix."""
    if given is None:
        return person.first_device
    text = str(given)
    if text not in person.kinds and f"{person.prefix}{text}" in person.kinds:
        return f"{person.prefix}{text}"
    return text


def _readings(person: Person, blocks: list[dict[str, Any]], case: str) -> list[dict[str, Any]]:
    out = []
    for block in blocks:
        did = _device_id(person, block.get("device"))
        rtype, value, unit = READING_DEFAULTS.get(person.kinds.get(did, ""), ("measurement", "1", "unit"))
        instants: list[datetime] = []
        if "instants" in block:
            for text in block["instants"]:
                parsed = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
                if parsed.tzinfo is None:
                    raise ScenarioError(f"{case}: reading instant {text} needs an offset")
                instants.append(parsed)
        else:
            clocks = block.get("at", "09:00")
            clocks = clocks if isinstance(clocks, list) else [clocks]
            for day in _days(block["days"]):
                for c in clocks:
                    instants.append(datetime.combine(day, _clock(c), tzinfo=person.tz))
        for instant in instants:
            out.append(
                {
                    "reading_id": "",
                    "patient_id": person.patient_id,
                    "device_id": did,
                    "measured_at": instant.isoformat(),
                    "type": block.get("type", rtype),
                    "value": str(block.get("value", value)),
                    "unit": block.get("unit", unit),
                    "transmission": block.get("transmission", "auto"),
                }
            )
    return out


def _time(person: Person, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for t in items:
        person.entries += 1
        seconds = int(t.get("minutes", 0)) * 60 + int(t.get("seconds", 0))
        when = datetime.combine(_d(t["day"]), _clock(t.get("at", "10:00")), tzinfo=person.tz)
        program = t.get("program", person.first_program)
        interactive = bool(t.get("interactive", False))
        out.append(
            {
                "entry_id": str(t.get("id", f"{person.prefix}T{person.entries}")),
                "patient_id": person.patient_id,
                "practitioner_id": ALIASES.get(t.get("by", "staff"), t.get("by", "staff")),
                "program": _blank(program),
                "started_at": when.isoformat(),
                "seconds": str(seconds),
                "activity": t.get("activity", "data review" if not interactive else "call with patient"),
                "interactive": _blank(interactive),
                "modality": _blank(t.get("modality", "phone" if interactive else None)),
                "note": "",
            }
        )
    return out


def _visits(person: Person, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for n, v in enumerate(items, start=1):
        out.append(
            {
                "visit_id": str(v.get("id", f"{person.prefix}V{n}")),
                "patient_id": person.patient_id,
                "practitioner_id": ALIASES.get(v.get("by", "practitioner"), v.get("by", "practitioner")),
                "date": _d(v["day"]).isoformat(),
                "code": str(v.get("code", "99214")),
                "place_of_service": str(v.get("place_of_service", "02" if v.get("telehealth") else "11")),
                "telehealth": _blank(bool(v.get("telehealth", False))),
            }
        )
    return out


def _practitioners(case: Case) -> list[dict[str, str]]:
    """The fixed practitioners, with ``employment: {RN1: contractor}`` applied."""
    given = case.spec.get("employment") or {}
    unknown = set(given) - {p["practitioner_id"] for p in PRACTITIONERS}
    if unknown:
        raise ScenarioError(f"{case.name}: employment names unknown practitioners {sorted(unknown)}")
    return [{**p, "employment": str(given.get(p["practitioner_id"], ""))} for p in PRACTITIONERS]


def _specs_of_people(case: Case) -> list[dict[str, Any]]:
    """The main patient first, then ``others``; another patient inherits the main one's
    enrollments and devices unless it gives its own (ids get its prefix)."""
    main = {k: case.spec[k] for k in PERSON_KEYS if k in case.spec}
    people = [main]
    for other in case.spec.get("others") or []:
        spec = dict(other)
        for key in ("enrollments", "devices"):
            spec.setdefault(
                key, [{k: v for k, v in item.items() if k != "id"} for item in main.get(key) or []]
            )
        people.append(spec)
    return people


def build_records(case: Case) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Person]]:
    records: dict[str, list[dict[str, Any]]] = {
        "patients": [],
        "practitioners": _practitioners(case),
        "enrollments": [],
        "devices": [],
        "readings": [],
        "time_entries": [],
        "visits": [],
    }
    people: dict[str, Person] = {}
    for index, spec in enumerate(_specs_of_people(case)):
        person = _person(spec, index)
        if person.patient_id in people:
            raise ScenarioError(f"{case.name}: patient {person.patient_id} is given twice")
        people[person.patient_id] = person
        enrollments = _enrollments(person, spec)
        first_start = enrollments[0]["start_date"] if enrollments else None
        records["patients"].append(person.patient)
        records["enrollments"] += enrollments
        records["devices"] += _devices(person, spec, first_start)
        records["readings"] += _readings(person, spec.get("readings") or [], case.name)
        records["time_entries"] += _time(person, spec.get("time") or [])
        records["visits"] += _visits(person, spec.get("visits") or [])
    return records, people


def added_records(case: Case, people: dict[str, Person], add: dict[str, Any]) -> dict[str, list[Any]]:
    """A later bundle with more readings or time, for one patient (default the main one)."""
    pid = str(add.get("patient", MAIN_PATIENT))
    if pid not in people:
        raise ScenarioError(f"{case.name}: add names patient {pid}, who is not in the case")
    person = people[pid]
    return {
        "readings": _readings(person, add.get("readings") or [], case.name),
        "time_entries": _time(person, add.get("time") or []),
    }


# ----------------------------------------------------------------------------------------
# Rule-years for a case: re-dated and/or with options set, always in a temporary copy.
# ----------------------------------------------------------------------------------------

RULESETS = Path(__file__).resolve().parents[2] / "caretally" / "rulesets"
#: Payer overlays written for scenarios (invented payers; never shipped).
OVERLAYS = Path(__file__).resolve().parent / "overlays"


def _overlay_ref(name: Any) -> str:
    """A shipped overlay's name, or ``overlays/<file>.yaml`` for one under tests/scenarios."""
    text = str(name)
    if text.endswith(".yaml"):
        path = OVERLAYS.parent / text
        if not path.is_file():
            raise ScenarioError(f"overlay file {text} not found under {OVERLAYS.parent}")
        return str(path)
    return text


def _shipped_digest() -> str:
    return hashlib.sha1(b"".join(p.read_bytes() for p in sorted(RULESETS.rglob("*.yaml")))).hexdigest()[:12]


def _rules_root(case: Case) -> Path | None:
    """A rulesets folder for a case that re-dates a year (``rules_redated``) or sets options.

    Dates far ahead (29 February 2028) need a rule-year in force, and none is published;
    re-dating the 2026 file tests the calendar arithmetic without pretending to know the
    2028 rules. ``options`` lets a case bill under a practice's other legitimate choice
    (``device_dos: threshold_day``) without anything under ``caretally/rulesets`` changing.
    The copy is named by the content of every shipped rule file and by what the case
    asks, so an edited ruleset never meets a stale copy.
    """
    redated = case.spec.get("rules_redated")
    options = case.spec.get("options")
    if not redated and not options:
        return None
    # Keys as text: a case may mix every-year options with per-year ones ({2027: {...}}).
    named = {str(k): v for k, v in (options or {}).items()}
    wanted = json.dumps({"redated": redated, "options": named}, sort_keys=True, default=str)
    tag = hashlib.sha1(wanted.encode()).hexdigest()[:10]
    root = Path(tempfile.gettempdir()) / f"caretally-rules-{_shipped_digest()}-{tag}"
    if root.exists():
        return root
    staging = Path(tempfile.mkdtemp(prefix="caretally-rules-staging-"))
    shutil.copytree(RULESETS, staging, dirs_exist_ok=True)
    if redated:
        source, target = int(redated["from"]), int(redated["to"])
        text = (staging / "medicare" / f"{source}.yaml").read_text(encoding="utf-8")
        text = text.replace(f"year: {source}", f"year: {target}")
        text = text.replace(f"effective_from: {source}-01-01", f"effective_from: {target}-01-01")
        text = text.replace(f"effective_to: {source}-12-31", f"effective_to: {target}-12-31")
        (staging / "medicare" / f"{target}.yaml").write_text(text, encoding="utf-8")
    for path, values in _options_by_file(staging, options or {}).items():
        text = path.read_text(encoding="utf-8")
        for name, value in values.items():
            text = _set_option(text, name, value, path)
        path.write_text(text, encoding="utf-8")
    try:
        staging.rename(root)
    except OSError:  # another worker made the same copy first: it is identical
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _options_by_file(root: Path, options: dict[Any, Any]) -> dict[Path, dict[str, Any]]:
    """``{name: value}`` sets an option in every Medicare rule-year; ``{2026: {...}}`` in one.

    A year that extends another (2027 on 2026) inherits what it does not write, so the
    every-year form sets the option in the files that write it and the others follow.
    """
    years = sorted((root / "medicare").glob("*.yaml"))
    out: dict[Path, dict[str, Any]] = {}
    for key, value in options.items():
        if isinstance(value, dict):
            path = root / "medicare" / f"{int(key)}.yaml"
            if not path.exists():
                raise ScenarioError(f"options: no Medicare rule-year {key}")
            out.setdefault(path, {}).update(value)
        else:
            written = [p for p in years if re.search(rf"^  {re.escape(str(key))}:$", p.read_text(), re.M)]
            if not written:
                raise ScenarioError(f"options: no Medicare rule-year writes option {key!r}")
            for path in written:
                out.setdefault(path, {})[str(key)] = value
    return out


def _set_option(text: str, name: str, value: Any, path: Path) -> str:
    """Replace one option's ``value:`` line in place, so the rest of the file stays verbatim."""
    block = re.search(r"^options:\n((?:[ \t].*\n|\n)*)", text, re.MULTILINE)
    if block is None:
        raise ScenarioError(f"{path.name}: no options section")
    inner = block.group(1)
    pattern = re.compile(rf"^(  {re.escape(name)}:\n    value: ).*$", re.MULTILINE)
    if not pattern.search(inner):
        raise ScenarioError(f"{path.name}: no option {name!r} written as '  {name}:' + '    value:'")
    literal = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    inner = pattern.sub(lambda m: m.group(1) + literal, inner, count=1)
    return text[: block.start(1)] + inner + text[block.end(1) :]


def _rulebooks(case: Case, people: dict[str, Person]) -> tuple[RuleBook, PayerRules]:
    """The Medicare rule-years and the payer rules the month run uses.

    ``overlay`` as a name applies to the main patient's payer (the way a practice maps a
    payer to an overlay); if that payer is Medicare the overlay judges everyone, as the
    harness always did. A mapping ``{payer: overlay}`` names each payer's overlay.
    """
    root = _rules_root(case)
    base = load_rulebook("medicare", root=root)
    overlay = case.spec.get("overlay")
    if not overlay:
        return base, PayerRules(base)
    if isinstance(overlay, dict):
        chosen = {
            Payer(str(p)): load_rulebook("medicare", overlay=_overlay_ref(n), root=root)
            for p, n in overlay.items()
        }
        return base, PayerRules(base, chosen)
    book = load_rulebook("medicare", overlay=_overlay_ref(overlay), root=root)
    payer = Payer(people[MAIN_PATIENT].patient["payer"])
    if payer is Payer.MEDICARE:
        return book, PayerRules(book)
    return base, PayerRules(base, {payer: book})


def _program_of(code: str) -> str:
    if code.startswith(("9897", "9898")):
        return "RTM"
    if code.startswith("9942"):
        return "PCM"
    if code in {"99490", "99439", "99491", "99437", "99487", "99489"}:
        return "CCM"
    return "RPM"


def _store_history(engine: Engine, case: Case, people: dict[str, Person]) -> None:
    """Earlier months' billed lines, as a previous run would have left them."""
    specs = _specs_of_people(case)
    for person, spec in zip(people.values(), specs, strict=True):
        for item in spec.get("history") or []:
            _store_history_line(engine, case, person, item)


def _store_history_line(engine: Engine, case: Case, person: Person, item: dict[str, Any]) -> None:
    run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{case.org_id}:{person.patient_id}:{item}"))
    dos = _d(item["date_of_service"])
    enrollment = str(item.get("enrollment", "E1"))
    if person.prefix and not enrollment.startswith(person.prefix):
        enrollment = person.prefix + enrollment
    with engine.begin() as conn:
        conn.execute(
            insert(schema.billing_runs).values(
                run_id=run_id,
                org_id=case.org_id,
                month=dos.strftime("%Y-%m"),
                status="locked",
                engine_version="scenario",
                ruleset_hash="-",
                input_digest="-",
                lines_digest="-",
                created_at=datetime(dos.year, dos.month, 1, tzinfo=UTC),
                settings={},
            )
        )
        conn.execute(
            insert(schema.claim_lines).values(
                run_id=run_id,
                org_id=case.org_id,
                line_key=f"{item['code']}|{dos}",
                patient_id=person.patient_id,
                enrollment_id=enrollment,
                program=str(item.get("program", _program_of(str(item["code"])))),
                payer="medicare",
                member_id=None,
                code=str(item["code"]),
                units=int(item.get("units", 1)),
                date_of_service=dos,
                period_start=dos,
                period_end=dos,
                billing_npi="1234567893",
                rendering_npi=None,
                diagnosis_codes="I10",
                place_of_service="11",
                modifiers="",
                charge=0,
                expected_payment=0,
            )
        )


# ----------------------------------------------------------------------------------------
# Running: import, then either one mid-period evaluation or a list of billing steps.
# ----------------------------------------------------------------------------------------


def _clock_from(start: datetime) -> Callable[[], datetime]:
    """Run timestamps one second apart, so "the newest run of the month" is never a tie."""
    ticks = itertools.count()
    return lambda: start + timedelta(seconds=next(ticks))


def _import(engine: Engine, case: Case, records: dict[str, list[Any]], name: str) -> None:
    report = import_records(engine, case.org_id, records, source_name=name)
    if not report.ok():
        problems = "\n".join(str(p) for p in report.problems)
        raise ScenarioError(f"{name}: scenario data did not import cleanly:\n{problems}")


def run_case(case: Case, url: str) -> Outcome:
    engine = db.open_database(url, org_id=case.org_id)
    try:
        records, people = build_records(case)
        _import(engine, case, records, case.name)
        _store_history(engine, case, people)
        base, payer_rules = _rulebooks(case, people)
        if "as_of" in case.spec:
            return _evaluate_open(engine, case, base, payer_rules)
        return _run_steps(engine, case, people, payer_rules)
    finally:
        engine.dispose()


def _evaluate_open(engine: Engine, case: Case, rules: RuleBook, payer_rules: PayerRules) -> Outcome:
    month = parse_month(str(case.spec["month"]))
    as_of = _d(case.spec["as_of"])
    decisions = [
        decision_to_json(d)
        for _, ds in evaluate_month(engine, case.org_id, month, rules, as_of=as_of)
        for d in ds
    ]
    outcome = Outcome(decisions)
    expect = case.spec.get("expect") or {}
    outcome.failures = compare(expect, decisions, [])
    if "worklist" in expect or "worklist_without" in expect:
        rows = [
            r for r in build_worklist(engine, case.org_id, as_of, payer_rules) if r.patient_id == MAIN_PATIENT
        ]
        steps = [(r, st) for r in rows for st in r.steps]
        outcome.failures += compare_worklist(expect, steps)
    return outcome


def _step_value(row: Any, step: Any, key: str) -> Any:
    if key == "enrollment":
        return row.enrollment_id
    value = getattr(step, key)
    return str(value) if key == "value" else value


def compare_worklist(expect: dict[str, Any], steps: list[tuple[Any, Any]]) -> list[str]:
    """Each expected step (``code``, ``value`` it earns, what it needs) is some row's step."""
    failures = []
    shown = [
        f"{st.code} worth {st.value} (needs {st.minutes_needed} min, {st.days_needed} days)"
        for _, st in steps
    ]
    for spec in expect.get("worklist") or []:
        bad = set(spec) - STEP_FIELDS
        if bad or "code" not in spec:
            raise ScenarioError(f"a worklist step needs code and takes {sorted(STEP_FIELDS)}: {spec}")
        wanted = {k: (str(v) if k in ("code", "value", "enrollment") else v) for k, v in spec.items()}
        if not any(all(_step_value(r, st, k) == v for k, v in wanted.items()) for r, st in steps):
            failures.append(f"no worklist step {spec}; steps: {shown}")
    for code in expect.get("worklist_without") or []:
        if any(st.code == str(code) for _, st in steps):
            failures.append(f"the worklist has a step for {code}, expected none; steps: {shown}")
    return failures


def compare_leakage(expect: dict[str, Any], misses: list[Any]) -> list[str]:
    """Each expected near miss (``code``, ``value`` lost, ``reason`` bucket) is in the report."""
    failures = []
    mine = [m for m in misses if m.patient_id == MAIN_PATIENT]
    shown = [f"{m.code} {m.bucket} worth {m.value}" for m in mine]
    for spec in expect.get("leakage") or []:
        bad = set(spec) - MISS_FIELDS
        if bad or "code" not in spec:
            raise ScenarioError(f"a near miss needs code and takes {sorted(MISS_FIELDS)}: {spec}")
        fields = {"code": "code", "value": "value", "reason": "bucket", "enrollment": "enrollment_id"}
        if not any(all(str(getattr(m, fields[k])) == str(v) for k, v in spec.items()) for m in mine):
            failures.append(f"no near miss {spec}; near misses: {shown}")
    for code in expect.get("leakage_without") or []:
        if any(m.code == str(code) for m in mine):
            failures.append(f"leakage lists {code}, expected it not to; near misses: {shown}")
    return failures


def _steps(case: Case) -> Iterator[tuple[int, dict[str, Any]]]:
    steps = case.spec.get("steps") or [{"bill": case.spec["month"]}]
    yield from enumerate(steps, start=1)


def _run_steps(engine: Engine, case: Case, people: dict[str, Person], rules: PayerRules) -> Outcome:
    now = _clock_from(datetime.now(UTC).replace(microsecond=0))
    last_bill = max(i for i, s in _steps(case) if "bill" in s)
    previous: dict[str, list[dict[str, Any]]] = {}
    outcome = Outcome()
    for index, step in _steps(case):
        if "add" in step:
            _import(engine, case, added_records(case, people, step["add"]), f"{case.name} (step {index})")
            continue
        label = f"step {index} (bill {step['bill']}): " if case.spec.get("steps") else ""
        expects = [
            e for e in (step.get("expect"), case.spec.get("expect") if index == last_bill else None) if e
        ]
        month = parse_month(str(step["bill"]))
        try:
            result = bill_month(engine, case.org_id, month, rules, now=now)
        except Exception as exc:
            # A refusal is one of caretally's own errors; a Python error is a crash, never a refusal.
            refusals = [e["refused"] for e in expects if "refused" in e]
            if not refusals or not type(exc).__module__.startswith("caretally."):
                raise
            outcome.failures += [
                f"{label}refused as expected but the message {str(exc)!r} does not contain {r!r}"
                for r in refusals
                if str(r) not in str(exc)
            ]
            continue
        failures = _lock_step(step, engine, case, result.month, now)
        decisions = stored_decisions(engine, result.run_id)
        lines = stored_lines(engine, result.run_id)
        outcome.decisions, outcome.lines = decisions, lines
        failures += _check_run(step.get("expect_run") or {}, engine, case, result, lines, previous)
        for expect in expects:
            if "refused" in expect:
                failures.append(f"expected the run to be refused ({expect['refused']!r}); it billed")
                continue
            failures += compare(expect, decisions, lines)
            if "leakage" in expect or "leakage_without" in expect:
                report = leakage_report(engine, case.org_id, month, rules)
                failures += compare_leakage(expect, report.misses)
        outcome.failures += [label + f for f in failures]
        previous[result.month] = [line_content(line) for line in lines]
    return outcome


def _lock_step(step: dict[str, Any], engine: Engine, case: Case, month: str, now: Any) -> list[str]:
    """``lock: true`` or ``lock: accept_provisional``; ``expect_lock: {refused: text}`` when it must fail."""
    lock = step.get("lock")
    expect = step.get("expect_lock") or {}
    if lock is None or lock is False:
        if expect:
            raise ScenarioError("expect_lock needs lock")
        return []
    if lock not in LOCKS or set(expect) - {"refused"}:
        raise ScenarioError(f"lock is one of {LOCKS}; expect_lock takes refused ({step})")
    try:
        lock_month(engine, case.org_id, month, now=now, accept_provisional=lock == "accept_provisional")
    except Exception as exc:
        if "refused" not in expect or not type(exc).__module__.startswith("caretally."):
            raise
        code = getattr(getattr(exc, "problem", None), "code", "")
        text = f"{code}: {exc}"
        return (
            [] if str(expect["refused"]) in text else [f"lock refused as {text!r}, not {expect['refused']!r}"]
        )
    if "refused" in expect:
        return [f"expected the lock to be refused ({expect['refused']!r}); it locked"]
    return []


def _check_run(
    spec: dict[str, Any],
    engine: Engine,
    case: Case,
    result: RunResult,
    lines: list[ClaimLine],
    previous: dict[str, list[dict[str, Any]]],
) -> list[str]:
    unknown = set(spec) - RUN_KEYS
    if unknown:
        raise ScenarioError(f"unknown expect_run keys {sorted(unknown)}")
    failures = []
    if "outcome" in spec and result.outcome != str(spec["outcome"]):
        failures.append(f"run outcome expected {spec['outcome']}, got {result.outcome}")
    if "status" in spec:
        run = current_run(engine, case.org_id, result.month)
        status = run.status if run is not None else None
        if status != str(spec["status"]):
            failures.append(f"run status expected {spec['status']}, got {status}")
    if "provisional" in spec:
        # The rule-years the run says were proposed (judged provisionally); [] / false: none.
        wanted_years = sorted(spec["provisional"] or [])
        got_years = sorted(result.summary.provisional)
        if wanted_years != got_years:
            failures.append(f"run judged provisionally by {got_years}, expected {wanted_years}")
    if "problems" in spec:
        # Texts each problem of the run must contain, in any order; [] means none.
        wanted = [str(t) for t in spec["problems"] or []]
        got = [str(p) for p in result.problems]
        if len(got) != len(wanted) or not all(any(t in g for g in got) for t in wanted):
            failures.append(f"run problems expected {wanted}, got {got}")
    if "undecided" in spec:
        # Program → enrollments the run summary says no rule-year decides ({}: none).
        wanted = {str(k): int(v) for k, v in (spec["undecided"] or {}).items()}
        got = dict(result.summary.undecided)
        if got != wanted:
            failures.append(
                f"undecided programs expected {wanted}, got {got} {result.summary.undecided_notes()}"
            )
    if "lines" in spec:
        if result.month not in previous:
            raise ScenarioError(
                f"expect_run.lines compares with an earlier run of {result.month}; there is none"
            )
        same = _sorted_contents([line_content(x) for x in lines]) == _sorted_contents(previous[result.month])
        if (str(spec["lines"]) == "same") != same:
            failures.append(
                f"claim lines expected {spec['lines']} compared with the previous run of {result.month}, "
                f"they are {'the same' if same else 'different'}"
            )
    return failures


def _sorted_contents(contents: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(c, sort_keys=True, default=str) for c in contents)


# ----------------------------------------------------------------------------------------
# Comparing decisions (as the run stored them) and claim lines.
# ----------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _period(d: dict[str, Any]) -> str:
    return f"{d['period']['start']}..{d['period']['end']}"


def _failed(d: dict[str, Any]) -> list[str]:
    return [r["rule_id"] for r in d["reasons"] if not r["passed"]]


def describe(d: dict[str, Any]) -> str:
    return (
        f"{d['patient_id']}/{d['enrollment_id']} {d['code']} {d['status']} units={d['units']} "
        f"dos={d['date_of_service']} period={_period(d)} pay={d['expected_payment']} failed={_failed(d)}"
    )


def compare(
    expect: dict[str, Any],
    decisions: list[dict[str, Any]],
    lines: list[ClaimLine],
    patient: str = MAIN_PATIENT,
) -> list[str]:
    """Every mismatch between what the scenario says and what the engine decided and billed."""
    unknown = set(expect) - EXPECT_KEYS
    if unknown:
        raise ScenarioError(f"unknown expect keys {sorted(unknown)}")
    mine = [d for d in decisions if d["patient_id"] == patient]
    failures: list[str] = []
    billable = [d for d in mine if d["status"] == "billable"]
    wanted = expect.get("billable") or {}
    for code, specs in wanted.items():
        specs = [s or {} for s in _as_list(specs)]
        enrollments = {str(s["enrollment"]) for s in specs if "enrollment" in s}
        got = sorted(
            (
                d
                for d in billable
                if d["code"] == str(code) and (not enrollments or d["enrollment_id"] in enrollments)
            ),
            key=lambda d: (d["period"]["start"], d["enrollment_id"]),
        )
        if len(got) != len(specs):
            shown = [describe(d) for d in got]
            failures.append(f"{code}: expected {len(specs)} billable line(s), got {len(got)}: {shown}")
            continue
        for d, s in zip(got, specs, strict=True):
            failures += _check_fields(str(code), d, s)
    if expect.get("no_other_billable", True):
        extra = [d for d in billable if d["code"] not in {str(c) for c in wanted}]
        failures += [f"unexpected billable: {describe(d)}" for d in extra]
    for status in ("not_billable", "reachable"):
        for code, items in (expect.get(status) or {}).items():
            failures += _check_status(str(code), status, items, mine)
    if "lines" in expect or expect.get("no_other_lines"):
        failures += compare_lines(expect.get("lines") or [], lines, bool(expect.get("no_other_lines")))
    for other, sub in (expect.get("patients") or {}).items():
        if "lines" in sub or "patients" in sub:
            raise ScenarioError("patients: give another patient's lines in the top-level lines (patient: …)")
        failures += [f"{other}: {f}" for f in compare(sub, decisions, [], str(other))]
    return failures


def _check_status(code: str, status: str, items: Any, decisions: list[dict[str, Any]]) -> list[str]:
    """``items``: rule ids that must be among the failed reasons, and/or field mappings."""
    got = [d for d in decisions if d["code"] == code]
    if not got:
        return [f"{code}: expected a {status} decision, found no decision for the code"]
    matching = [d for d in got if d["status"] == status]
    specs = [i for i in _as_list(items or []) if isinstance(i, dict)]
    for s in specs:
        if "enrollment" in s:
            matching = [d for d in matching if d["enrollment_id"] == str(s["enrollment"])]
    if not matching:
        return [f"{code}: expected {status}, got {[describe(d) for d in got]}"]
    failures = []
    for item in _as_list(items or []):
        if isinstance(item, dict):
            # Several decisions of the code may have this status (two periods): one must fit.
            tries = [_check_fields(code, d, item) for d in matching]
            if all(tries):
                failures += tries[0]
            continue
        if not any(r["rule_id"] == item and not r["passed"] for d in matching for r in d["reasons"]):
            failures.append(f"{code}: expected failed reason {item}, got {[describe(d) for d in matching]}")
    return failures


def _check_fields(code: str, d: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    failures = []
    for key, value in spec.items():
        if key not in DECISION_FIELDS:
            raise ScenarioError(f"{code}: unknown field {key!r} in expectation")
        if key == "units":
            actual: Any = d["units"]
            value = int(value)
        elif key == "date_of_service":
            actual, value = d["date_of_service"], _d(value).isoformat()
        elif key == "period":
            actual, value = _period(d), str(value)
        elif key == "expected_payment":
            actual, value = d["expected_payment"], str(value)
        elif key == "enrollment":
            actual, value = d["enrollment_id"], str(value)
        elif key == "provisional":
            actual, value = bool(d.get("provisional")), bool(value)
        elif key == "message_contains":
            text = " | ".join(r["message"] for r in d["reasons"])
            for part in _as_list(value):
                if str(part) not in text:
                    failures.append(f"{code}: no reason message contains {part!r}; messages: {text}")
            continue
        elif key in ("reasons", "without_reasons"):
            present = {r["rule_id"] for r in d["reasons"]}
            for rule_id in _as_list(value):
                if (rule_id in present) != (key == "reasons"):
                    verb = "has no" if key == "reasons" else "must not have"
                    failures.append(
                        f"{code}: {verb} reason {rule_id} ({describe(d)}; reasons {sorted(present)})"
                    )
            continue
        else:  # evidence_entries
            used = {e for r in d["reasons"] if r["passed"] for e in r["evidence"].get("time_entry_ids", [])}
            actual, value = sorted(used), sorted(str(v) for v in _as_list(value))
        if actual != value:
            failures.append(f"{code}: {key} expected {value}, got {actual} ({describe(d)})")
    return failures


def _line_value(line: ClaimLine, key: str) -> Any:
    if key == "period":
        return f"{line.period_start}..{line.period_end}"
    if key == "enrollment":
        return line.enrollment_id
    if key == "patient":
        return line.patient_id
    if key in ("modifiers", "diagnosis_codes"):
        return list(getattr(line, key))
    if key in ("program", "payer"):
        return getattr(line, key).value
    value = getattr(line, key)
    return value.isoformat() if isinstance(value, date) else value


def _wanted_value(key: str, value: Any) -> Any:
    if key in ("modifiers", "diagnosis_codes"):
        if value is None or value == "":
            return []
        return [str(v) for v in value] if isinstance(value, list) else [p for p in str(value).split(";") if p]
    if key == "date_of_service":
        return _d(value).isoformat()
    if key == "units":
        return int(value)
    if key in ("expected_payment", "charge"):
        return str(value)
    if key in ("rendering_npi", "billing_npi") and value in (None, "none"):
        return None
    return str(value)


def _line_matches(line: ClaimLine, spec: dict[str, Any]) -> bool:
    for key, value in spec.items():
        actual = _line_value(line, key)
        if key in ("expected_payment", "charge"):
            actual = str(actual)
        if actual != _wanted_value(key, value):
            return False
    return True


def describe_line(line: ClaimLine) -> str:
    mods = ";".join(line.modifiers) or "-"
    return (
        f"{line.patient_id}/{line.enrollment_id} {line.code} x{line.units} dos={line.date_of_service} "
        f"period={line.period_start}..{line.period_end} mods={mods} pay={line.expected_payment} "
        f"billing={line.billing_npi} rendering={line.rendering_npi}"
    )


def compare_lines(specs: list[dict[str, Any]], lines: list[ClaimLine], no_others: bool) -> list[str]:
    """Each expected line must match its own stored line; with ``no_others`` nothing is left over.

    Matching is a small exact search (lines are few), so a loosely written expectation
    never steals the line a more specific one needs.
    """
    for spec in specs:
        bad = set(spec) - LINE_FIELDS
        if bad or "code" not in spec:
            raise ScenarioError(f"a line expectation needs code and takes {sorted(LINE_FIELDS)}: {spec}")
    specs = [{k: _wanted_value(k, v) for k, v in {"patient": MAIN_PATIENT, **s}.items()} for s in specs]
    fits = [[i for i, line in enumerate(lines) if _line_matches(line, s)] for s in specs]
    assignment = _match(fits, 0, set())
    failures = []
    if assignment is None:
        for s, f in zip(specs, fits, strict=True):
            if not f:
                failures.append(f"no claim line {s}; lines: {[describe_line(x) for x in lines]}")
        if not failures:
            shown = [describe_line(x) for x in lines]
            failures.append(f"the expected lines {specs} cannot each have their own line: {shown}")
        return failures
    if no_others:
        used = set(assignment)
        failures += [
            f"unexpected claim line: {describe_line(x)}" for i, x in enumerate(lines) if i not in used
        ]
    return failures


def _match(fits: list[list[int]], at: int, taken: set[int]) -> list[int] | None:
    if at == len(fits):
        return []
    for i in fits[at]:
        if i in taken:
            continue
        rest = _match(fits, at + 1, taken | {i})
        if rest is not None:
            return [i, *rest]
    return None
