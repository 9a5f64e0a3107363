"""Scenario files → real imports → SQL facts → rules → compared decisions.

A scenario is written the way a billing expert would describe a patient-month: who is
enrolled, which days had readings, what time was logged, which month is billed, and what
must come out. Nothing here shortcuts the product: records go through
``caretally.ingest.import_records`` into a real database, facts come from the same SQL
the month run uses, and decisions from the same engine.

The format is documented in ``tests/scenarios/README.md``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from sqlalchemy import Engine, insert

from caretally.billing.evaluate import evaluate_month
from caretally.dates import parse_month
from caretally.ingest import import_records
from caretally.model import Decision, Status
from caretally.rules.loader import load_rulebook
from caretally.store import db, schema

PRACTITIONERS = [
    {"practitioner_id": "DR1", "npi": "1234567893", "name": "Dana Reyes", "credential": "MD"},
    {"practitioner_id": "DR2", "npi": "1987654328", "name": "Omar Patel", "credential": "DO"},
    {"practitioner_id": "NP1", "npi": "1765432103", "name": "Lee Chen", "credential": "NP"},
    {"practitioner_id": "RN1", "npi": "", "name": "Ava Brooks", "credential": "RN"},
    {"practitioner_id": "MA1", "npi": "", "name": "Sam Ortiz", "credential": "MA"},
    {"practitioner_id": "PT1", "npi": "1555555550", "name": "Kim Novak", "credential": "PT"},
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
CASE_KEYS = {
    "name", "patient", "enrollments", "devices", "readings", "time", "history", "month", "as_of",
    "overlay", "expect", "skip", "rules_redated",
}  # fmt: skip


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
    decisions: list[Decision]
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
        bad = set(spec) - CASE_KEYS
        if bad:
            raise ScenarioError(f"{path}: case {raw.get('name')!r} has unknown keys {sorted(bad)}")
        name = str(spec.get("name") or "").strip()
        if not name or name in seen:
            raise ScenarioError(f"{path}: every case needs a unique sentence as its name ({name!r})")
        seen.add(name)
        cases.append(Case(path, name, spec))
    return cases


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


def build_records(case: Case) -> dict[str, list[dict[str, Any]]]:
    spec = case.spec
    patient = {
        "patient_id": "P1",
        "birth_date": "1950-04-02",
        "timezone": "America/New_York",
        "payer": "medicare",
        "member_id": "1EG4TE5MK73",
        "family_name": "Doe",
        "given_name": "Pat",
        "sex": "F",
        **(spec.get("patient") or {}),
    }
    tz = ZoneInfo(patient["timezone"])
    enrollments = []
    programs: dict[str, str] = {}
    for i, e in enumerate(spec.get("enrollments") or [], start=1):
        eid = str(e.get("id", f"E{i}"))
        start = _d(e["start"])
        program = e["program"]
        programs[eid] = program
        care = program in ("CCM", "PCM", "APCM", "BHI")
        enrollments.append(
            {
                "enrollment_id": eid,
                "patient_id": patient["patient_id"],
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
            }
        )
    first_program = enrollments[0]["program"] if enrollments else "RPM"
    first_start = enrollments[0]["start_date"] if enrollments else None
    devices = []
    kinds: dict[str, str] = {}
    for i, d in enumerate(spec.get("devices") or [], start=1):
        did = str(d.get("id", f"D{i}"))
        kinds[did] = d.get("kind", "blood_pressure")
        assigned = d.get("assigned", first_start)
        devices.append(
            {
                "device_id": did,
                "patient_id": patient["patient_id"],
                "program": d.get("program", first_program),
                "kind": kinds[did],
                "medical_device": _blank(d.get("medical", True)),
                "setup_date": _blank(d.get("setup", assigned)),
                "assigned_date": _blank(assigned),
                "returned_date": _blank(d.get("returned")),
            }
        )
    readings = []
    for block in spec.get("readings") or []:
        did = str(block.get("device", devices[0]["device_id"] if devices else "D1"))
        rtype, value, unit = READING_DEFAULTS.get(kinds.get(did, ""), ("measurement", "1", "unit"))
        instants: list[datetime] = []
        if "instants" in block:
            for text in block["instants"]:
                parsed = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
                if parsed.tzinfo is None:
                    raise ScenarioError(f"{case.name}: reading instant {text} needs an offset")
                instants.append(parsed)
        else:
            clocks = block.get("at", "09:00")
            clocks = clocks if isinstance(clocks, list) else [clocks]
            for day in _days(block["days"]):
                for c in clocks:
                    instants.append(datetime.combine(day, _clock(c), tzinfo=tz))
        for instant in instants:
            readings.append(
                {
                    "reading_id": "",
                    "patient_id": patient["patient_id"],
                    "device_id": did,
                    "measured_at": instant.isoformat(),
                    "type": block.get("type", rtype),
                    "value": str(block.get("value", value)),
                    "unit": block.get("unit", unit),
                    "transmission": block.get("transmission", "auto"),
                }
            )
    entries = []
    for i, t in enumerate(spec.get("time") or [], start=1):
        seconds = int(t.get("minutes", 0)) * 60 + int(t.get("seconds", 0))
        when = datetime.combine(_d(t["day"]), _clock(t.get("at", "10:00")), tzinfo=tz)
        program = t.get("program", first_program)
        interactive = bool(t.get("interactive", False))
        entries.append(
            {
                "entry_id": str(t.get("id", f"T{i}")),
                "patient_id": patient["patient_id"],
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
    return {
        "patients": [patient],
        "practitioners": PRACTITIONERS,
        "enrollments": enrollments,
        "devices": devices,
        "readings": readings,
        "time_entries": entries,
    }


RULESETS = Path(__file__).resolve().parents[2] / "caretally" / "rulesets"


def _rules_root(case: Case) -> Path | None:
    """A rulesets folder where one shipped year is re-dated to another (``rules_redated``).

    Dates far ahead (29 February 2028) need a rule-year in force, and none is published;
    re-dating the 2026 file tests the calendar arithmetic without pretending to know the
    2028 rules. The copy lives in a temporary folder, never in the package.
    """
    spec = case.spec.get("rules_redated")
    if not spec:
        return None
    source, target = int(spec["from"]), int(spec["to"])
    text = (RULESETS / "medicare" / f"{source}.yaml").read_text(encoding="utf-8")
    # Named by the content of every shipped rule file, so an edited ruleset never meets a stale copy.
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(RULESETS.rglob("*.yaml")))).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"caretally-rules-{source}-as-{target}-{digest}"
    if not root.exists():
        shutil.copytree(RULESETS, root)
        text = text.replace(f"year: {source}", f"year: {target}")
        text = text.replace(f"effective_from: {source}-01-01", f"effective_from: {target}-01-01")
        text = text.replace(f"effective_to: {source}-12-31", f"effective_to: {target}-12-31")
        (root / "medicare" / f"{target}.yaml").write_text(text, encoding="utf-8")
    return root


def _program_of(code: str) -> str:
    if code.startswith(("9897", "9898")):
        return "RTM"
    if code.startswith("9942"):
        return "PCM"
    if code in {"99490", "99439", "99491", "99437", "99487", "99489"}:
        return "CCM"
    return "RPM"


def _store_history(engine: Engine, case: Case) -> None:
    """Earlier months' billed lines, as a previous run would have left them."""
    for item in case.spec.get("history") or []:
        run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{case.org_id}:{item}"))
        dos = _d(item["date_of_service"])
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
                    patient_id="P1",
                    enrollment_id=str(item.get("enrollment", "E1")),
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
# Running and comparing.
# ----------------------------------------------------------------------------------------


def run_case(case: Case, url: str) -> Outcome:
    engine = db.open_database(url, org_id=case.org_id)
    report = import_records(engine, case.org_id, build_records(case), source_name=case.name)
    if not report.ok():
        problems = "\n".join(str(p) for p in report.problems)
        raise ScenarioError(f"scenario data did not import cleanly:\n{problems}")
    _store_history(engine, case)
    rules = load_rulebook("medicare", overlay=case.spec.get("overlay"), root=_rules_root(case))
    month = parse_month(str(case.spec["month"]))
    as_of = _d(case.spec["as_of"]) if "as_of" in case.spec else None
    decisions = [d for _, ds in evaluate_month(engine, case.org_id, month, rules, as_of=as_of) for d in ds]
    outcome = Outcome(decisions)
    outcome.failures = compare(case.spec.get("expect") or {}, decisions)
    engine.dispose()
    return outcome


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _describe(d: Decision) -> str:
    failed = [r.rule_id for r in d.reasons if not r.passed]
    return (
        f"{d.code} {d.status.value} units={d.units} dos={d.date_of_service} "
        f"period={d.period.start}..{d.period.end} failed={failed}"
    )


def compare(expect: dict[str, Any], decisions: list[Decision]) -> list[str]:
    """Every mismatch between what the scenario says and what the engine decided."""
    unknown = set(expect) - {"billable", "not_billable", "reachable", "no_other_billable"}
    if unknown:
        raise ScenarioError(f"unknown expect keys {sorted(unknown)}")
    failures: list[str] = []
    billable = [d for d in decisions if d.status is Status.BILLABLE]
    wanted = expect.get("billable") or {}
    for code, specs in wanted.items():
        got = sorted((d for d in billable if d.code == str(code)), key=lambda d: d.period.start)
        specs = [s or {} for s in _as_list(specs)]
        if len(got) != len(specs):
            shown = [_describe(d) for d in got]
            failures.append(f"{code}: expected {len(specs)} billable line(s), got {len(got)}: {shown}")
            continue
        for d, s in zip(got, specs, strict=True):
            failures += _check_fields(str(code), d, s)
    if expect.get("no_other_billable", True):
        extra = [d for d in billable if d.code not in {str(c) for c in wanted}]
        failures += [f"unexpected billable: {_describe(d)}" for d in extra]
    for status_key, status in (("not_billable", Status.NOT_BILLABLE), ("reachable", Status.REACHABLE)):
        for code, rule_ids in (expect.get(status_key) or {}).items():
            got = [d for d in decisions if d.code == str(code)]
            if not got:
                failures.append(f"{code}: expected a {status.value} decision, found no decision for the code")
                continue
            matching = [d for d in got if d.status is status]
            if not matching:
                failures.append(f"{code}: expected {status.value}, got {[_describe(d) for d in got]}")
                continue
            for rule_id in _as_list(rule_ids or []):
                if isinstance(rule_id, dict):
                    failures += _check_fields(str(code), matching[0], rule_id)
                    continue
                if not any(r.rule_id == rule_id and not r.passed for d in matching for r in d.reasons):
                    failures.append(
                        f"{code}: expected failed reason {rule_id}, got {[_describe(d) for d in matching]}"
                    )
    return failures


def _check_fields(code: str, d: Decision, spec: dict[str, Any]) -> list[str]:
    failures = []
    for key, value in spec.items():
        if key == "units":
            actual: Any = d.units
            value = int(value)
        elif key == "date_of_service":
            actual, value = d.date_of_service, _d(value)
        elif key == "period":
            actual, value = f"{d.period.start}..{d.period.end}", str(value)
        elif key == "expected_payment":
            actual, value = str(d.expected_payment), str(value)
        elif key == "message_contains":
            text = " ".join(r.message for r in d.reasons)
            if str(value) not in text:
                failures.append(f"{code}: no reason message contains {value!r}; messages: {text}")
            continue
        elif key == "evidence_entries":
            used = {e for r in d.reasons if r.passed for e in r.evidence.time_entry_ids}
            actual, value = sorted(used), sorted(str(v) for v in _as_list(value))
        else:
            raise ScenarioError(f"{code}: unknown field {key!r} in expectation")
        if actual != value:
            failures.append(f"{code}: {key} expected {value}, got {actual} ({_describe(d)})")
    return failures
