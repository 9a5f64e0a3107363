"""The OIG measures computed from plain values: stored claim lines and visits in, a report out.

Pure: no database, no clock. The service reads the current run of every month and the
visits, and hands them here (``scan``). Every measure says what it counted, shows the
OIG's national figure beside the practice's, and lists the patients and claim lines
behind each finding with the evidence, so a person can check it without caretally.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from caretally.compliance import chronic
from caretally.compliance.config import Measure, MeasureBook

FLAGGED, FINDINGS, CLEAR = "flagged", "findings", "clear"
NOT_JUDGED, NOT_COMPUTABLE = "not_judged", "not_computable"
OIG_LOOKBACK_START = date(2021, 1, 1)
#: The OIG 2025 population: practices that billed RPM "routinely" in the year.
ROUTINE_ENROLLEES, ROUTINE_SERVICES = 10, 100


@dataclass(frozen=True, slots=True)
class ScanLine:
    """One stored claim line of a month's current run."""

    run_id: str
    run_status: str
    line_id: int
    line_key: str
    patient_id: str
    enrollment_id: str
    program: str
    code: str
    units: int
    date_of_service: date
    billing_npi: str | None
    diagnoses: tuple[str, ...]
    expected_payment: Decimal

    @property
    def month(self) -> str:
        return self.date_of_service.strftime("%Y-%m")

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_status": self.run_status,
            "line_id": self.line_id,
            "line_key": self.line_key,
            "enrollment_id": self.enrollment_id,
            "code": self.code,
            "units": self.units,
            "date_of_service": self.date_of_service.isoformat(),
            "billing_npi": self.billing_npi,
            "diagnoses": list(self.diagnoses),
            "expected_payment": str(self.expected_payment),
        }


@dataclass(frozen=True, slots=True)
class ScanVisit:
    visit_id: str
    patient_id: str
    practitioner_id: str
    day: date
    code: str
    telehealth: bool


@dataclass(frozen=True, slots=True)
class Window:
    """The scanned dates: a calendar year, or one month of it."""

    year: int
    month: str | None
    start: date
    end: date

    def holds(self, day: date) -> bool:
        return self.start <= day <= self.end


@dataclass
class Finding:
    patient_id: str | None
    evidence: str
    lines: list[ScanLine] = field(default_factory=list)
    severity: str = "info"
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "severity": self.severity,
            "evidence": self.evidence,
            "values": self.values,
            "lines": [line.to_json() for line in self.lines],
        }


@dataclass
class Result:
    measure: Measure
    citation: str
    status: str
    practice: str
    explanation: str
    numbers: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        m = self.measure
        return {
            "id": m.id,
            "title": m.title,
            "unit": m.unit,
            "status": self.status,
            "national": m.national,
            "practice": self.practice,
            "explanation": self.explanation,
            "numbers": self.numbers,
            "thresholds": {k: {"value": _plain(c.value), "doc": c.doc} for k, c in m.thresholds.items()},
            "options": self.options,
            "citation": self.citation,
            "doc": m.doc,
            "patients": sorted({f.patient_id for f in self.findings if f.patient_id}),
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass
class Report:
    window: Window
    measures: list[Result]
    population: dict[str, Any]
    sources: dict[str, Any]

    @property
    def patient_ids(self) -> list[str]:
        named = {f.patient_id for r in self.measures for f in r.findings if f.patient_id}
        lined = {line.patient_id for r in self.measures for f in r.findings for line in f.lines}
        return sorted(named | lined)

    def to_json(self) -> dict[str, Any]:
        w = self.window
        return {
            "year": w.year,
            "month": w.month,
            "window": {"start": w.start.isoformat(), "end": w.end.isoformat()},
            "population": self.population,
            "sources": self.sources,
            "classification": {**chronic.CLASSIFICATION, "version": chronic.package_version()},
            "flagged": [r.measure.id for r in self.measures if r.status == FLAGGED],
            "measures": [r.to_json() for r in self.measures],
        }


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def percent(part: int, whole: int) -> str:
    if whole == 0:
        return "n/a"
    share = (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.1"), ROUND_HALF_UP)
    return f"{share}%"


def _share(part: int, whole: int) -> Decimal:
    return Decimal(part) / Decimal(whole) if whole else Decimal(0)


def _month_before(month: str) -> str:
    y, m = int(month[:4]), int(month[5:7])
    return f"{y - 1}-12" if m == 1 else f"{y}-{m - 1:02d}"


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


class _Data:
    """The lines and visits indexed the ways the measures ask for them."""

    def __init__(
        self, book: MeasureBook, window: Window, lines: Sequence[ScanLine], visits: Sequence[ScanVisit]
    ):
        self.book, self.window = book, window
        self.setup = book.code_set("setup")
        self.device = book.code_set("device_supply")
        self.tm = book.code_set("treatment_management")
        self.ccm = book.code_set("ccm")
        self.rpm = self.setup | self.device | self.tm
        known = [line for line in lines if line.date_of_service <= window.end]
        self.inside = [line for line in known if window.holds(line.date_of_service)]
        self.rpm_inside: dict[str, list[ScanLine]] = defaultdict(list)
        for line in self.inside:
            if line.code in self.rpm:
                self.rpm_inside[line.patient_id].append(line)
        self.first_rpm: dict[str, ScanLine] = {}
        self.setup_ever: dict[str, ScanLine] = {}
        for line in sorted(known, key=lambda x: (x.date_of_service, x.line_id)):
            if line.code in self.rpm:
                self.first_rpm.setdefault(line.patient_id, line)
            if line.code in self.setup:
                self.setup_ever.setdefault(line.patient_id, line)
        self.enrollees = sorted(self.rpm_inside)
        self.first_month = min((line.month for line in self.first_rpm.values()), default=None)
        self.visits: dict[str, list[ScanVisit]] = defaultdict(list)
        for v in sorted(visits, key=lambda x: (x.day, x.visit_id)):
            self.visits[v.patient_id].append(v)
        self.any_visits = bool(visits)


def scan(book: MeasureBook, window: Window, lines: Sequence[ScanLine], visits: Sequence[ScanVisit]) -> Report:
    """Every measure for the window. ``lines`` may reach back before it (first claims and
    set-up are judged on the whole stored history); lines after ``window.end`` are ignored."""
    data = _Data(book, window, lines, visits)
    results = [
        _a2(data),
        _b1(data),
        _b2(data),
        _b3(data),
        _b4(data),
        _b5(data),
        _c11(data),
    ]
    services = sum(line.units for ls in data.rpm_inside.values() for line in ls)
    population = {
        "rpm_enrollees": len(data.enrollees),
        "rpm_services": services,
        "ccm_lines": sum(1 for line in data.inside if line.code in data.ccm),
        "routine_rpm_biller": len(data.enrollees) >= ROUTINE_ENROLLEES and services > ROUTINE_SERVICES,
        "routine_definition": (
            "the OIG's 2025 population: at least 10 RPM enrollees and more than 100 RPM services "
            "in the year; the B measures' national shares are of such practices"
        ),
    }
    runs = sorted({(line.month, line.run_id, line.run_status) for line in data.inside})
    sources = {
        "claim_lines": len(data.inside),
        "runs": [{"month": m, "run_id": r, "status": s} for m, r, s in runs],
        "visits": sum(len(v) for v in data.visits.values()),
        "what": "the current (draft or locked) run of every month; lines by their date of service",
    }
    return Report(window, results, population, sources)


def _result(data: _Data, mid: str, **kwargs: Any) -> Result:
    m = data.book.measures[mid]
    return Result(m, data.book.citation(m.cite), **kwargs)


# --- A2: not all three components -------------------------------------------------------


def _a2(data: _Data) -> Result:
    findings: list[Finding] = []
    missing: Counter[str] = Counter()
    year = data.window
    for pid in data.enrollees:
        lines = data.rpm_inside[pid]
        codes = {line.code for line in lines}
        gaps = []
        if pid not in data.setup_ever:
            gaps.append("set-up")
        if not codes & data.device:
            gaps.append("device supply")
        if not codes & data.tm:
            gaps.append("treatment management")
        if not gaps:
            continue
        missing.update(gaps)
        missing["any"] += 1
        setup = data.setup_ever.get(pid)
        note = (
            f"; set-up billed on {setup.date_of_service}"
            if setup is not None and "set-up" not in gaps
            else ""
        )
        if "set-up" in gaps and data.first_rpm[pid].month == data.first_month:
            note = (
                "; the patient's RPM lines begin in the first month of stored runs: a set-up may precede them"
            )
        evidence = (
            f"no {', no '.join(gaps)} line between {year.start} and {year.end} "
            f"(set-up: any stored run up to {year.end}){note}; billed: {', '.join(sorted(codes))}"
        )
        severity = "high" if "treatment management" in gaps else "info"
        findings.append(Finding(pid, evidence, lines, severity, {"missing": gaps}))
    n = len(data.enrollees)
    practice = (
        f"{missing['any']} of {n} RPM enrollees ({percent(missing['any'], n)}) did not receive all three; "
        f"{percent(missing['set-up'], n)} no set-up, "
        f"{percent(missing['device supply'], n)} no device supply, "
        f"{percent(missing['treatment management'], n)} no treatment management"
    )
    return _result(
        data,
        "A2",
        status=FINDINGS if findings else CLEAR,
        practice=practice,
        explanation="per enrollee; no practice threshold was published (the national share is beside it)",
        numbers={
            "enrollees": n,
            "not_all_three": missing["any"],
            "no_setup": missing["set-up"],
            "no_device_supply": missing["device supply"],
            "no_treatment_management": missing["treatment management"],
        },
        findings=findings,
    )


# --- B1: spike in new enrollees ---------------------------------------------------------


def _months_of(window: Window) -> list[str]:
    if window.month is not None:
        return [window.month]
    last = window.end.month
    return [f"{window.year}-{m:02d}" for m in range(1, last + 1)]


def _b1(data: _Data) -> Result:
    m = data.book.measures["B1"]
    ratio, floor = m.value("rise_ratio"), int(m.value("min_new"))
    new: dict[str, list[str]] = defaultdict(list)
    for pid, line in data.first_rpm.items():
        new[line.month].append(pid)
    first_month = min(new) if new else None
    findings: list[Finding] = []
    per_month: dict[str, dict[str, Any]] = {}
    for month in _months_of(data.window):
        now, before = len(new.get(month, ())), len(new.get(_month_before(month), ()))
        judged = month != first_month
        spike = judged and now >= floor and Decimal(now) >= ratio * before
        per_month[month] = {"new": now, "previous_month": before, "judged": judged, "spike": spike}
        if spike:
            pids = sorted(new[month])
            evidence = (
                f"{month}: {now} new RPM enrollees against {before} in {_month_before(month)} "
                f"(at least {ratio}× and at least {floor})"
            )
            lines = [data.first_rpm[p] for p in pids]
            findings.append(Finding(None, evidence, lines, "high", {"month": month, "patients": pids}))
    busiest = max(per_month.items(), key=lambda kv: kv[1]["new"], default=None)
    practice = (
        "no RPM enrollees"
        if busiest is None
        else (
            f"most new enrollees in one month: {busiest[1]['new']} ({busiest[0]}); "
            f"{len(findings)} month(s) with a spike"
        )
    )
    unjudged = f"; {first_month}, the first month of stored RPM lines, is not judged" if first_month else ""
    return _result(
        data,
        "B1",
        status=FLAGGED if findings else CLEAR,
        practice=practice,
        explanation=f"new enrollee = first stored RPM line in the month{unjudged}",
        numbers={"months": per_month},
        findings=findings,
    )


# --- B2: no prior relationship ----------------------------------------------------------


def _b2(data: _Data) -> Result:
    m = data.book.measures["B2"]
    cutoff = m.value("practice_share")
    lookback = str(data.book.option("prior_relationship_lookback"))
    options = {"prior_relationship_lookback": lookback}
    if not data.any_visits:
        return _result(
            data,
            "B2",
            status=NOT_JUDGED,
            practice="no visits imported (visits.csv): a prior relationship cannot be judged",
            explanation="import the practice's visits to judge this measure",
            options=options,
        )
    findings: list[Finding] = []
    for pid in data.enrollees:
        first = data.first_rpm[pid]
        start = OIG_LOOKBACK_START if lookback == "since_2021" else _years_before(first.date_of_service, 3)
        seen = [v for v in data.visits.get(pid, ()) if start <= v.day <= first.date_of_service]
        if seen:
            continue
        later = [v for v in data.visits.get(pid, ()) if v.day > first.date_of_service]
        after = f"; first visit after it: {later[0].day} ({later[0].code})" if later else ""
        evidence = (
            f"no visit from {start} to the first RPM line on {first.date_of_service} ({first.code}){after}"
        )
        findings.append(Finding(pid, evidence, [first], "high", {"lookback_start": start.isoformat()}))
    n = len(data.enrollees)
    share = _share(len(findings), n)
    flagged = n > 0 and share > cutoff
    return _result(
        data,
        "B2",
        status=FLAGGED if flagged else (FINDINGS if findings else CLEAR),
        practice=f"{len(findings)} of {n} RPM enrollees ({percent(len(findings), n)}) had no prior visit",
        explanation=f"flagged above {percent(int(cutoff * 100), 100)} of enrollees; lookback {lookback}",
        numbers={
            "enrollees": n,
            "without_prior_visit": len(findings),
            "share": str(share.quantize(Decimal("0.001"))),
        },
        findings=findings,
        options=options,
    )


# --- B3: no treatment management --------------------------------------------------------


def _b3(data: _Data) -> Result:
    cutoff = data.book.measures["B3"].value("practice_share")
    findings = []
    for pid in data.enrollees:
        lines = data.rpm_inside[pid]
        if not {line.code for line in lines} & data.tm:
            codes = ", ".join(sorted({line.code for line in lines}))
            evidence = (
                f"no treatment-management line ({', '.join(sorted(data.tm))}) in the window; billed: {codes}"
            )
            findings.append(Finding(pid, evidence, lines, "high"))
    n = len(data.enrollees)
    share = _share(len(findings), n)
    flagged = n > 0 and share > cutoff
    return _result(
        data,
        "B3",
        status=FLAGGED if flagged else (FINDINGS if findings else CLEAR),
        practice=f"{len(findings)} of {n} RPM enrollees ({percent(len(findings), n)}) had no treatment "
        "management",
        explanation=f"flagged above {percent(int(cutoff * 100), 100)} of enrollees",
        numbers={
            "enrollees": n,
            "without_treatment_management": len(findings),
            "share": str(share.quantize(Decimal("0.001"))),
        },
        findings=findings,
    )


# --- B4: shared patients ----------------------------------------------------------------


def _b4(data: _Data) -> Result:
    others = data.book.measures["B4"].value("other_practices")
    share = data.book.option("shared_patients_practice_share")
    findings = []
    for pid in data.enrollees:
        lines = data.rpm_inside[pid]
        billers = sorted({line.billing_npi or "?" for line in lines})
        if len(billers) >= 2:
            evidence = (
                f"RPM lines under {len(billers)} billing practitioners of this practice: {', '.join(billers)}"
            )
            findings.append(Finding(pid, evidence, lines, "info", {"billing_npis": billers}))
    return _result(
        data,
        "B4",
        status=NOT_COMPUTABLE,
        practice=(
            f"not computable from one practice's records (needs other practices' RPM claims for the same "
            f"enrollees); proxy: {len(findings)} enrollee(s) billed under two or more of this practice's NPIs"
        ),
        explanation=f"an enrollee is shared when {others}+ other practices billed RPM for them; practice "
        f"cut-off {share} (unpublished; option shared_patients_practice_share)",
        numbers={"proxy_enrollees": len(findings)},
        findings=findings,
        options={"shared_patients_practice_share": str(share)},
    )


# --- B5: multiple device-supply lines per enrollee-month --------------------------------


def _b5(data: _Data) -> Result:
    repeated = int(data.book.option("multiple_devices_repeated"))
    by_month: dict[tuple[str, str], list[ScanLine]] = defaultdict(list)
    for line in data.inside:
        if line.code in data.device:
            by_month[(line.patient_id, line.month)].append(line)
    findings = []
    for (pid, month), lines in sorted(by_month.items()):
        if len(lines) >= 2:
            codes = ", ".join(f"{line.code} on {line.date_of_service}" for line in lines)
            findings.append(
                Finding(
                    pid,
                    f"{len(lines)} device-supply lines in {month}: {codes}",
                    lines,
                    "high",
                    {"month": month},
                )
            )
    flagged = len(findings) >= repeated
    return _result(
        data,
        "B5",
        status=FLAGGED if flagged else (FINDINGS if findings else CLEAR),
        practice=f"{len(findings)} enrollee-month(s) with two or more device-supply lines",
        explanation=f"flagged at {repeated} or more such enrollee-months (unpublished cut-off; "
        "option multiple_devices_repeated)",
        numbers={"enrollee_months": len(findings)},
        findings=findings,
        options={"multiple_devices_repeated": repeated},
    )


# --- C11: CCM with fewer than two chronic conditions ------------------------------------


def _c11(data: _Data) -> Result:
    need = int(data.book.measures["C11"].value("min_conditions"))
    ccm = [line for line in data.inside if line.code in data.ccm]
    findings = []
    for line in ccm:
        judged, categories = chronic.chronic_categories(list(line.diagnoses))
        if len(categories) >= need:
            continue
        words = ", ".join(f"{j.code} {j.verdict.replace('_', ' ')}" for j in judged)
        unknown = [j.code for j in judged if j.verdict == chronic.UNKNOWN]
        note = f"; not in the FY2019 CCI table: {', '.join(unknown)}" if unknown else ""
        evidence = (
            f"{line.code} on {line.date_of_service}: {len(categories)} chronic condition(s) "
            f"({', '.join(categories) or 'none'}) among {words}{note}"
        )
        values = {
            "chronic_categories": categories,
            "diagnoses": [{"code": j.code, "cci": j.verdict} for j in judged],
        }
        findings.append(Finding(line.patient_id, evidence, [line], "high", values))
    return _result(
        data,
        "C11",
        status=FINDINGS if findings else CLEAR,
        practice=f"{len(findings)} of {len(ccm)} CCM lines ({percent(len(findings), len(ccm))}) with "
        f"fewer than {need} chronic conditions",
        explanation="chronic: the CCI marks the code chronic; conditions: distinct 3-character categories",
        numbers={"ccm_lines": len(ccm), "below_minimum": len(findings)},
        findings=findings,
    )


def lines_of(findings: Iterable[Finding]) -> list[ScanLine]:
    return [line for f in findings for line in f.lines]
