"""The columnar decision pass: statuses, units, dates of service and payments in SQL.

Facts arrive as six column tables (:mod:`caretally.columnar.facts`), rule-years as
code rows (:mod:`caretally.columnar.codes`); DuckDB joins them for every patient-month
at once. The SQL mirrors the engine's families check for check — common checks
(enrollment, consent, billing practitioner, established patient, initiating visit),
day counts inside the window, the RTM device-kind check, the set-up episode walk, the
minute ladder with its interactive call and add-on units — and derives the status the
way ``common.finish`` does: a failed check → ``not_billable``; else an open period or a
pending check → ``reachable``; else ``billable`` when units > 0. Verdicts are one letter:
``P`` passed, ``W`` pending (waiting), ``F`` failed.

It produces only the typed outcome per code (status, units, DOS, payment); the reasons
stay the engine's, which ``explain`` re-runs for one patient on demand. The agreement
with ``evaluate_patient_month`` is a property test (tests/columnar).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from datetime import date
from decimal import Decimal

import duckdb
import pyarrow as pa

from caretally.columnar.codes import CodeRow, RequirementRow, YearRow
from caretally.columnar.facts import Columns, Compiled, add, flag_of
from caretally.model import PatientMonthFacts, Program, Status
from caretally.rules.families.common import option_value
from caretally.rules.families.concurrency import DIFFERENT_PRACTITIONERS, program_groups
from caretally.rules.params import RuleBook, RuleYear


@dataclass(frozen=True, slots=True)
class Outcome:
    """One code's decision as the columnar pass makes it (the fields agreement compares)."""

    enrollment_id: str
    code: str
    period_start: date
    period_end: date
    status: Status
    units: int
    date_of_service: date | None
    expected_payment: Decimal | None
    #: What a claim line needs besides: who rendered it (units > 0 only) and the credentials
    #: of everyone who furnished a counted minute of its service (``common.service_parts``).
    rendering_practitioner_id: str | None = None
    parts: tuple[str, ...] = ()
    #: The rule ids of its failed or pending requirements, in the engine's order of reasons.
    blocking: tuple[str, ...] = ()


@dataclass
class ColumnarResult:
    """Outcomes per decided patient, and the flag (in words) of every patient left to the engine."""

    decided: dict[str, list[Outcome]]
    flagged: dict[str, str]

    @property
    def total(self) -> int:
        return len(self.decided) + len(self.flagged)


def decide_months(months: Iterable[tuple[PatientMonthFacts, RuleBook]]) -> ColumnarResult:
    """Decide every patient-month the columnar pass can decide exactly; flag the rest."""
    compiled = Compiled()
    columns = Columns()
    flagged: dict[str, str] = {}
    ids: list[str] = []
    several: dict[str, dict[str, Enrolled]] = {}
    for facts, book in months:
        why = flag_of(facts, book, compiled)
        if why is not None:
            flagged[facts.patient_id] = why
            continue
        if len(facts.programs) > 1:
            several[facts.patient_id] = {
                p.enrollment.enrollment_id: Enrolled(
                    p.enrollment.program,
                    (p.enrollment.start_date, p.enrollment.enrollment_id),
                    p.enrollment.billing_practitioner_id or None,
                )
                for p in facts.programs
            }
        add(columns, len(ids), facts, book, compiled)
        ids.append(facts.patient_id)
    decided: dict[str, list[Outcome]] = {pid: [] for pid in ids}
    if not ids:
        return ColumnarResult(decided, flagged)
    con = duckdb.connect()
    try:
        _load(con, columns, compiled)
        late = con.execute(LATE_FLAGS).fetchall()
        for pm, why in late:
            pid = ids[pm]
            if pid in decided:
                del decided[pid]
                flagged[pid] = why
        amounts = {(c.year, c.code): c.amount for c in compiled.codes}
        care = {(c.year, c.code) for c in compiled.codes if c.family == "care_management"}
        # 99091 claiming money meets the management codes it excludes (``exclusive_with``).
        interpretation = {(c.year, c.code) for c in compiled.codes if c.family == "data_interpretation"}
        care_year: dict[str, int] = {}  # patients with codes to settle together → their rule-year
        years_of: dict[str, int] = {}
        for row in con.execute(DECISIONS).fetchall():
            pm, y, eid, code, p_start, p_end, status, units, dos, who, parts, checks = row
            pid = ids[pm]
            if pid not in decided:
                continue
            pay = _payment(amounts[(y, code)], units)
            who = who if units > 0 else None
            failed = tuple(checks.split(",")) if checks else ()
            outcome = Outcome(
                eid, code, p_start, p_end, Status(status), units, dos, pay, who, tuple(parts or ()), failed
            )
            decided[pid].append(outcome)
            if (y, code) in care or ((y, code) in interpretation and _counts(outcome)):
                care_year[pid] = y
            years_of[pid] = y
    finally:
        con.close()
    for pid, y in care_year.items():
        if pid not in several:
            decided[pid] = settle(decided[pid], compiled.years[y], {})
    for pid, enrolled in several.items():
        if pid in decided:
            year = compiled.years[years_of[pid]]
            decided[pid] = settle(decided[pid], year, enrolled)
    for outcomes in decided.values():
        outcomes.sort(key=lambda o: (o.enrollment_id, o.code, o.period_start))
    return ColumnarResult(decided, flagged)


# --------------------------------------------------------------------------------------
# Care management: one lane per month, then the exclusions between services
# --------------------------------------------------------------------------------------


def _counts(o: Outcome) -> bool:
    """``common.counts``: billable, or reachable with units."""
    return o.status is Status.BILLABLE or (o.status is Status.REACHABLE and o.units > 0)


def _demote(o: Outcome, rule_id: str, final: bool) -> Outcome:
    """``common.demote`` on the typed outcome: the conflict joins the blocking checks."""
    blocking = (*o.blocking, rule_id)
    if final:
        return replace(
            o,
            status=Status.NOT_BILLABLE,
            units=0,
            date_of_service=None,
            expected_payment=None,
            rendering_practitioner_id=None,
            blocking=blocking,
        )
    return replace(o, status=Status.REACHABLE, date_of_service=None, blocking=blocking)


def _pay(os_: Iterable[Outcome]) -> Decimal:
    return sum((o.expected_payment or Decimal(0) for o in os_ if _counts(o)), Decimal(0))


@dataclass(frozen=True, slots=True)
class Enrolled:
    """What the concurrency passes read of an enrollment besides its outcomes."""

    program: Program
    start: tuple[date, str]  # start date, then id: the engine's tie order
    billing_practitioner_id: str | None


def settle(outcomes: list[Outcome], year: RuleYear, enrolled: dict[str, Enrolled]) -> list[Outcome]:
    """The month's conflicts between codes and programs settled as the engine settles them.

    Per-code outcomes come from SQL (each code judged on its own); what is left reads
    several codes at once and only some patients have it: ``care_management._one_lane``
    (one lane per program and month), then the concurrency passes the decided months can
    meet — ``exclusive_with`` (one enrollment, or enrollments of one practitioner),
    ``never_together`` and ``not_same_practitioner`` (program pairs of the rule-year) and
    ``add_on_base``. ``enrolled`` is empty for a patient with one enrollment (the program
    pairs cannot clash). Billing history, two enrollments of one program, payer coverage
    and APCM/BHI/CoCM are flagged, so ``billed_windows``, ``one_practitioner``,
    ``with_base`` and the yearly caps never apply; ``no_double_count`` cannot fire (each
    entry is credited to its program's one enrollment, and only one lane bills).
    """
    out = sorted(outcomes, key=lambda o: (o.enrollment_id, o.code, o.period_start))
    for eid in dict.fromkeys(o.enrollment_id for o in out):
        lanes: dict[str, list[int]] = {}
        for i, o in enumerate(out):
            rule = year.codes.get(o.code)
            if o.enrollment_id == eid and rule is not None and rule.family == "care_management":
                lanes.setdefault(str(year.code(year.base_of(o.code)).value("lane")), []).append(i)
        order = sorted(lanes, key=lambda lane: min(out[i].code for i in lanes[lane]))
        live = [lane for lane in order if any(_counts(out[i]) for i in lanes[lane])]
        if len(live) <= 1:
            continue
        best = _choose_lane(year, {lane: [out[i] for i in lanes[lane]] for lane in live}, order)
        final = all(out[i].status is Status.BILLABLE for i in lanes[best] if _counts(out[i]))
        program = str(year.codes[out[lanes[best][0]].code].program).lower()
        for lane in live:
            if lane != best:
                for i in lanes[lane]:
                    if _counts(out[i]):
                        out[i] = _demote(out[i], f"{program}.lane", final)
    out = _exclusive_with(out, year, enrolled)
    if enrolled:
        out = _program_pairs(out, year, enrolled)
    return _add_on_base(out, year)


def _choose_lane(year: RuleYear, live: dict[str, list[Outcome]], order: list[str]) -> str:
    """``care_management._choose_lane``: complex and met, else money, else ``ccm_lane_order``."""
    for lane in order:
        if lane in live and any(year.codes[o.code].get("requires_complexity") for o in live[lane]):
            return lane

    def unpriced(lane: str) -> bool:
        return any(_counts(o) and year.codes[o.code].amount is None for o in live[lane])

    priced = [lane for lane in live if not unpriced(lane)]
    if priced:
        return min(priced, key=lambda lane: (-_pay(live[lane]), order.index(lane)))
    words = [str(w) for w in year.option("ccm_lane_order").value]

    def kind(lane: str) -> int:
        return next((rank for rank, word in enumerate(words) if lane.endswith(word)), len(words))

    return min(live, key=lambda lane: (kind(lane), order.index(lane)))


def _exclusive_with(out: list[Outcome], year: RuleYear, enrolled: dict[str, Enrolled]) -> list[Outcome]:
    """``concurrency.exclusive_with``: of two services that exclude each other, the better-paying stays."""
    services: dict[tuple[str, str, date], list[int]] = {}
    for i, o in enumerate(out):
        services.setdefault((o.enrollment_id, _base_of(o, out, year), o.period_start), []).append(i)
    live = [(k, v) for k, v in services.items() if any(_counts(out[i]) for i in v)]

    def start(eid: str) -> tuple[date, str]:
        return enrolled[eid].start if eid in enrolled else (date.min, eid)

    ranked = sorted(live, key=lambda kv: (-_pay(out[i] for i in kv[1]), start(kv[0][0]), kv[0][1], kv[0][2]))
    kept: list[list[int]] = []
    for _key, members in ranked:
        winner = next((k for k in kept if _conflicts(out, members, k, year, enrolled)), None)
        if winner is None:
            kept.append(members)
            continue
        final = all(out[i].status is Status.BILLABLE for i in winner if _counts(out[i]))
        for i in members:
            if _counts(out[i]):
                out[i] = _demote(out[i], "concurrency.exclusive_with", final)
    return out


def _base_of(o: Outcome, out: list[Outcome], year: RuleYear) -> str:
    """``concurrency._base_of``: the base an add-on goes with (the one its enrollment bills)."""
    bases = year.bases_of(o.code) if o.code in year.codes else (o.code,)
    if len(bases) == 1:
        return bases[0]
    mates = [
        m
        for m in out
        if m.code in bases and m.enrollment_id == o.enrollment_id and m.period_start == o.period_start
    ]
    counting = [m.code for m in mates if _counts(m)]
    return (counting or [m.code for m in mates] or list(bases))[0]


def _same_biller(a: Outcome, b: Outcome, enrolled: dict[str, Enrolled]) -> bool:
    """``concurrency._same_biller``: one enrollment, or one billing practitioner."""
    if a.enrollment_id == b.enrollment_id:
        return True
    return (
        enrolled[a.enrollment_id].billing_practitioner_id == enrolled[b.enrollment_id].billing_practitioner_id
    )


def _conflicts(
    out: list[Outcome], mine: list[int], theirs: list[int], year: RuleYear, enrolled: dict[str, Enrolled]
) -> bool:
    for i in mine:
        a = out[i]
        if not _counts(a):
            continue
        for j in theirs:
            b = out[j]
            if not _counts(b) or not _same_biller(a, b, enrolled):
                continue
            overlap = a.period_start <= b.period_end and b.period_start <= a.period_end
            if overlap and (b.code in year.excludes(a.code) or a.code in year.excludes(b.code)):
                return True
    return False


def _program_pairs(out: list[Outcome], year: RuleYear, enrolled: dict[str, Enrolled]) -> list[Outcome]:
    """``concurrency.never_together``, then ``not_same_practitioner`` (with its option)."""
    for group, _param in program_groups(year, "never_together"):
        for n, a in enumerate(group):
            for b in group[n + 1 :]:
                out = _settle(out, a, b, enrolled, "concurrency.never_together", lambda x, y: True)

    def same(x: Outcome, y: Outcome) -> bool:
        return (
            enrolled[x.enrollment_id].billing_practitioner_id
            == enrolled[y.enrollment_id].billing_practitioner_id
        )

    for group, param in program_groups(year, "not_same_practitioner"):
        blocked = False
        if param.option is not None:
            blocked = option_value(year, param.option, DIFFERENT_PRACTITIONERS) == "blocked"
        for n, a in enumerate(group):
            for b in group[n + 1 :]:
                out = _settle(out, a, b, enrolled, "concurrency.not_same_practitioner", same)
                if blocked:
                    out = _settle(out, a, b, enrolled, "concurrency.not_same_practitioner", lambda x, y: True)
    return out


def _settle(
    out: list[Outcome],
    a: Program,
    b: Program,
    enrolled: dict[str, Enrolled],
    rule_id: str,
    related: Callable[[Outcome, Outcome], bool],
) -> list[Outcome]:
    """``concurrency._settle``: where two programs' counting codes clash, the one paying more stays."""
    ia = [i for i, o in enumerate(out) if enrolled[o.enrollment_id].program == a and _counts(o)]
    ib = [i for i, o in enumerate(out) if enrolled[o.enrollment_id].program == b and _counts(o)]
    clash = [
        (i, j)
        for i in ia
        for j in ib
        if out[i].period_start <= out[j].period_end
        and out[j].period_start <= out[i].period_end
        and related(out[i], out[j])
    ]
    if not clash:
        return out

    def earliest(idx: list[int]) -> tuple[date, str]:
        return min((enrolled[out[i].enrollment_id].start for i in idx), default=(date.max, ""))

    pay_a, pay_b = _pay(out[i] for i in ia), _pay(out[j] for j in ib)
    a_wins = (-pay_a, earliest(ia)) <= (-pay_b, earliest(ib))
    win = ia if a_wins else ib
    lose = sorted({j for _, j in clash}) if a_wins else sorted({i for i, _ in clash})
    final = all(out[i].status is Status.BILLABLE for i in win)
    out = list(out)
    for i in lose:
        out[i] = _demote(out[i], rule_id, final)
    return out


def _add_on_base(out: list[Outcome], year: RuleYear) -> list[Outcome]:
    """``concurrency.add_on_base``: an add-on whose base no longer counts is not billed."""
    for i, o in enumerate(out):
        bases = year.bases_of(o.code) if o.code in year.codes else (o.code,)
        if bases == (o.code,) or not _counts(o):
            continue
        if not any(
            m.code in bases
            and m.enrollment_id == o.enrollment_id
            and m.period_start == o.period_start
            and _counts(m)
            for m in out
        ):
            out[i] = _demote(out[i], "concurrency.add_on_base", True)
    return out


def _payment(amount: Decimal | None, units: int) -> Decimal | None:
    """``common.payment``: amount × units; no national amount prices at $0.00."""
    if units <= 0:
        return None
    return Decimal("0.00") if amount is None else amount * units


def _table(cols: dict[str, list[object]], types: dict[str, pa.DataType]) -> pa.Table:
    return pa.table({name: pa.array(values, type=types.get(name)) for name, values in cols.items()})


DATE = pa.date32()
TYPES: dict[str, pa.DataType] = {
    "pm": pa.int64(),
    "y": pa.int64(),
    "month_start": DATE,
    "month_end": DATE,
    "as_of": DATE,
    "e_start": DATE,
    "e_end": DATE,
    "consent": DATE,
    "visit": DATE,
    "data_from": DATE,
    "setup_day": DATE,
    "first_setup": DATE,
    "p_start": DATE,
    "p_end": DATE,
    "d": DATE,
    "setup_date": DATE,
    "est": pa.bool_(),
    "prior": pa.bool_(),
    "interactive": pa.bool_(),
    "seconds": pa.int64(),
    "ord": pa.int64(),
    "eid": pa.string(),
    "dev": pa.string(),
    "modality": pa.string(),
    "kind": pa.string(),
    "program": pa.string(),
    "device_id": pa.string(),
    "entry_id": pa.string(),
    "performer": pa.string(),
    "patient_id": pa.string(),
    "bp": pa.string(),
    "practitioner_id": pa.string(),
    "credential": pa.string(),
    "raw_seconds": pa.int64(),
    "ndx": pa.int64(),
    "complexity": pa.string(),
}


def _rows(rows: list[CodeRow] | list[YearRow] | list[RequirementRow], cls: type) -> pa.Table:
    names = [f.name for f in fields(cls)]
    data: dict[str, list[object]] = {n: [getattr(r, n) for r in rows] for n in names}
    types: dict[str, pa.DataType] = {}
    for n in names:
        if n == "amount":
            data[n] = [None if v is None else str(v) for v in data[n]]
            types[n] = pa.string()
        elif n in ("performers", "modalities", "lane_order"):
            data[n] = [list(v) for v in data[n]]
            types[n] = pa.list_(pa.string())
        elif n in (
            "program",
            "family",
            "code",
            "base_code",
            "rtm_kind",
            "device_dos",
            "setup_dos",
            "time_dos",
            "lane",
            "complexity",
        ):
            types[n] = pa.string()
        elif isinstance(data[n][0] if data[n] else None, bool) or n in (
            "requires_interactive",
            "established_missing_fails",
            "visit_required",
            "employed_only",
            "coverage",
            "allocate_unassigned",
            "consent",
            "billing_practitioner",
            "established",
        ):
            types[n] = pa.bool_()
        else:
            types[n] = pa.int64()
    return pa.table({n: pa.array(data[n], type=types[n]) for n in names})


def _load(con: duckdb.DuckDBPyConnection, columns: Columns, compiled: Compiled) -> None:
    tables = {
        "pm": _table(columns.pm, TYPES),
        "enr": _table(columns.enr, TYPES),
        "per": _table(columns.per, TYPES),
        "day": _table(columns.day, TYPES),
        "dev": _table(columns.dev, TYPES),
        "ent": _table(columns.ent, TYPES),
        "code": _rows(compiled.codes, CodeRow),
        "yr": _rows(list(compiled.options.values()), YearRow),
        "req": _rows(compiled.requirements, RequirementRow),
    }
    for name, table in tables.items():
        con.register(f"{name}_arrow", table)
        con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {name}_arrow")
        con.unregister(f"{name}_arrow")
    con.execute(PREPARE)


PREPARE = """
-- Every period an enrollment is judged over: its device periods this month, the earlier
-- periods of its episode (set-up), and the calendar month (time codes); with the window
-- (enrollment, consent), whether it is open, the days left, and the common checks.
CREATE TEMP TABLE w AS
WITH p AS (
    SELECT pm, eid, p_start, p_end, CASE WHEN prior THEN 'prior' ELSE 'device' END AS kind, y FROM per
    UNION ALL
    SELECT e.pm, e.eid, m.month_start, m.month_end, 'month', m.y FROM enr e JOIN pm m USING (pm)
)
SELECT p.pm, p.eid, p.p_start, p.p_end, p.kind, p.y, e.program, m.as_of, e.setup_day, e.first_setup,
       e.data_from,
       greatest(p.p_start, e.e_start, coalesce(e.consent, e.e_start)) AS w_first,
       least(p.p_end, coalesce(e.e_end, p.p_end)) AS w_last,
       p.p_end > m.as_of AS is_open,
       NOT (e.e_start <= p.p_end AND (e.e_end IS NULL OR e.e_end >= p.p_start)) AS c_enr,
       coalesce(r.consent AND (e.consent IS NULL OR e.consent > p.p_end), false) AS c_consent,
       coalesce(r.billing_practitioner AND coalesce(e.bp, '') = '', false) AS c_bp,
       coalesce(r.established AND (NOT e.est OR (e.est IS NULL AND o.established_missing_fails)), false)
           AS c_est,
       coalesce(o.visit_required AND (e.visit IS NULL OR e.visit > p.p_end), false) AS c_visit
FROM p JOIN enr e USING (pm, eid) JOIN pm m USING (pm)
LEFT JOIN req r ON r.year = p.y AND r.program = e.program
LEFT JOIN yr o ON o.year = p.y;
ALTER TABLE w ADD COLUMN cfail BOOLEAN;
UPDATE w SET cfail = c_enr OR c_consent OR c_bp OR c_est OR c_visit;

-- Days left in a window once the data known ends (0 for a closed period).
CREATE MACRO days_left(is_open, first_day, last_day, as_of) AS
    CASE WHEN is_open THEN greatest(0, date_diff('day', greatest(first_day, as_of + 1), last_day) + 1)
         ELSE 0 END;

-- The device kinds each rule-year splits a program's device supply by (NULL: all days).
CREATE TEMP TABLE kinds AS
SELECT DISTINCT year AS y, program, rtm_kind AS kind FROM code WHERE family = 'device_supply';

-- Data days of this month's periods, tagged with the kind of each reporting device.
CREATE TEMP TABLE kday AS
SELECT d.pm, d.eid, d.d, NULL::VARCHAR AS kind FROM day d WHERE NOT d.prior
UNION ALL
SELECT d.pm, d.eid, d.d, v.kind FROM day d
JOIN dev v ON v.pm = d.pm AND v.eid = d.eid AND v.device_id = d.dev AND v.program = 'RTM'
WHERE NOT d.prior;

-- Counted days per device period and kind, numbered (the n-th day dates threshold_day).
CREATE TEMP TABLE cday AS
SELECT pm, eid, p_start, kind, d, row_number() OVER (PARTITION BY pm, eid, p_start, kind ORDER BY d) AS rn
FROM (
    SELECT DISTINCT w.pm, w.eid, w.p_start, k.kind, x.d
    FROM w JOIN kinds k ON k.y = w.y AND k.program = w.program
    JOIN kday x ON x.pm = w.pm AND x.eid = w.eid AND x.kind IS NOT DISTINCT FROM k.kind
     AND x.d BETWEEN w.p_start AND w.p_end AND x.d BETWEEN w.w_first AND w.w_last
    WHERE w.kind = 'device'
);

CREATE TEMP TABLE cnt AS
SELECT w.pm, w.eid, w.p_start, k.kind, count(c.d) AS n
FROM w JOIN kinds k ON k.y = w.y AND k.program = w.program
LEFT JOIN cday c ON c.pm = w.pm AND c.eid = w.eid AND c.p_start = w.p_start
     AND c.kind IS NOT DISTINCT FROM k.kind
WHERE w.kind = 'device'
GROUP BY ALL;

-- Device supply: tiers by day count; RTM by device kind.
CREATE TEMP TABLE dec_device AS
SELECT w.pm, w.y, w.eid, c.code, w.p_start, w.p_end, w.is_open, w.cfail, w.program,
       w.c_enr, w.c_consent, w.c_bp, w.c_est, w.c_visit, c.max_days IS NOT NULL AND n.n > c.max_days AS over,
       CASE WHEN c.max_days IS NOT NULL AND n.n > c.max_days THEN 'F'
            WHEN n.n >= c.min_days THEN 'P'
            WHEN days_left(w.is_open, w.w_first, w.w_last, w.as_of) > 0
                 AND n.n + days_left(w.is_open, w.w_first, w.w_last, w.as_of) >= c.min_days THEN 'W'
            ELSE 'F' END AS v1,
       CASE WHEN c.rtm_kind IS NULL THEN 'P'
            WHEN NOT EXISTS (SELECT 1 FROM dev v WHERE v.pm = w.pm AND v.eid = w.eid AND v.program = 'RTM'
                             AND v.kind = c.rtm_kind) THEN 'F'
            WHEN EXISTS (SELECT 1 FROM cnt o WHERE o.pm = w.pm AND o.eid = w.eid AND o.p_start = w.p_start
                         AND o.kind <> c.rtm_kind AND o.n > 0) THEN CASE WHEN w.is_open THEN 'W' ELSE 'F' END
            ELSE 'P' END AS v2,
       'P' AS v3,
       CASE WHEN n.n >= c.min_days THEN c.max_units ELSE 0 END AS draft_units,
       CASE WHEN o.device_dos = 'period_end' THEN w.p_end
            ELSE (SELECT x.d FROM cday x WHERE x.pm = w.pm AND x.eid = w.eid AND x.p_start = w.p_start
                  AND x.kind IS NOT DISTINCT FROM c.rtm_kind AND x.rn = c.min_days) END AS dos
FROM w JOIN code c ON c.year = w.y AND c.program = w.program AND c.family = 'device_supply'
JOIN yr o ON o.year = w.y
JOIN cnt n ON n.pm = w.pm AND n.eid = w.eid AND n.p_start = w.p_start
     AND n.kind IS NOT DISTINCT FROM c.rtm_kind
WHERE w.kind = 'device';

-- Set-up: the episode's first period reaching the minimum after the set-up day.
CREATE TEMP TABLE ep_walk AS
SELECT w.pm, w.eid, w.p_start, w.p_end,
       CASE WHEN w.data_from IS NOT NULL AND w.p_end < w.data_from THEN 'before'
            WHEN c.min_days IS NULL THEN 'before'
            WHEN count(DISTINCT x.d) >= c.min_days THEN 'found'
            WHEN w.p_end > w.as_of THEN 'open' END AS stop
FROM w
JOIN (SELECT DISTINCT e.pm, e.eid, s.code FROM enr e JOIN pm m USING (pm)
      JOIN code s ON s.year = m.y AND s.program = e.program AND s.family = 'setup') sc
  ON sc.pm = w.pm AND sc.eid = w.eid
LEFT JOIN code c ON c.year = w.y AND c.code = sc.code AND c.family = 'setup'
LEFT JOIN day x ON x.pm = w.pm AND x.eid = w.eid AND x.prior = (w.kind = 'prior')
     AND x.d BETWEEN w.p_start AND w.p_end AND x.d >= greatest(w.w_first, w.setup_day) AND x.d <= w.w_last
WHERE w.kind IN ('device', 'prior') AND w.setup_day IS NOT NULL AND w.p_end >= w.setup_day
GROUP BY w.pm, w.eid, w.p_start, w.p_end, w.data_from, w.as_of, c.min_days;

CREATE TEMP TABLE episode AS
SELECT pm, eid, stop, p_start, p_end FROM (
    SELECT *, row_number() OVER (PARTITION BY pm, eid ORDER BY p_start) AS rn
    FROM ep_walk WHERE stop IS NOT NULL
) WHERE rn = 1;

CREATE TEMP TABLE setup_w AS
SELECT w.*, c.code, c.min_days AS need, c.max_units, o.setup_dos, o.device_dos,
       CASE WHEN w.setup_day IS NOT NULL AND w.setup_day > w.w_first THEN w.setup_day ELSE w.w_first END
           AS s_first,
       ep.stop, ep.p_start AS ep_start, ep.p_end AS ep_end
FROM w JOIN code c ON c.year = w.y AND c.program = w.program AND c.family = 'setup'
JOIN yr o ON o.year = w.y
LEFT JOIN episode ep ON ep.pm = w.pm AND ep.eid = w.eid
WHERE w.kind = 'device';

CREATE TEMP TABLE sday AS
SELECT s.pm, s.eid, s.p_start, x.d, row_number() OVER (PARTITION BY s.pm, s.eid, s.p_start ORDER BY x.d) AS rn
FROM setup_w s JOIN (SELECT DISTINCT pm, eid, d FROM day WHERE NOT prior) x
  ON x.pm = s.pm AND x.eid = s.eid AND x.d BETWEEN s.p_start AND s.p_end
 AND x.d BETWEEN s.s_first AND s.w_last;

CREATE TEMP TABLE dec_setup AS
WITH s AS (
    SELECT s.*,
           (SELECT count(*) FROM sday x WHERE x.pm = s.pm AND x.eid = s.eid AND x.p_start = s.p_start) AS n,
           days_left(s.is_open, s.s_first, s.w_last, s.as_of) AS lft,
           CASE WHEN s.setup_dos = 'setup_date' THEN s.first_setup
                WHEN s.device_dos = 'period_end' THEN s.p_end
                ELSE (SELECT x.d FROM sday x WHERE x.pm = s.pm AND x.eid = s.eid AND x.p_start = s.p_start
                      AND x.rn = s.need) END AS dos
    FROM setup_w s
)
SELECT pm, y, eid, code, p_start, p_end, is_open, cfail, program, c_enr, c_consent, c_bp, c_est, c_visit,
       stop,
       CASE WHEN setup_day IS NULL THEN 'P'
            WHEN stop = 'before' THEN 'F'
            WHEN stop = 'found' AND (ep_start <> p_start OR ep_end <> p_end) THEN 'F'
            WHEN p_end < setup_day THEN 'F'
            ELSE 'P' END AS v1,
       CASE WHEN n >= need THEN 'P' WHEN lft > 0 AND n + lft >= need THEN 'W' ELSE 'F' END AS v2,
       CASE WHEN first_setup IS NOT NULL AND first_setup <= coalesce(dos, p_end) THEN 'P'
            WHEN is_open THEN 'W' ELSE 'F' END AS v3,
       CASE WHEN n >= need THEN max_units ELSE 0 END AS draft_units,
       dos
FROM s;

-- Time: each timed base code's pool (entries of its performers in its period and window).
CREATE TEMP TABLE tpool AS
SELECT w.pm, w.y, w.eid, w.p_start, c.code, t.entry_id, t.d, t.seconds, t.ord, t.practitioner_id,
       t.performer, t.credential, t.raw_seconds,
       t.interactive AND t.modality IS NOT NULL AND list_contains(c.modalities, t.modality) AS call
FROM w JOIN code c ON c.year = w.y AND c.program = w.program AND c.base_code IS NULL
     AND ((c.family IN ('treatment_management', 'care_management') AND w.kind = 'month')
          OR (c.family = 'data_interpretation' AND w.kind = 'device'))
JOIN ent t ON t.pm = w.pm AND t.eid = w.eid AND t.d BETWEEN w.p_start AND w.p_end
     AND t.d BETWEEN w.w_first AND w.w_last AND list_contains(c.performers, t.performer);

CREATE TEMP TABLE tsum AS
SELECT pm, eid, p_start, code, sum(seconds) AS secs, bool_or(call) AS called,
       list_sort(list(DISTINCT credential) FILTER (WHERE raw_seconds > 0)) AS parts
FROM tpool GROUP BY ALL;

-- Who rendered a timed service: most counted seconds (ties: lowest id); clinical staff
-- render under the billing practitioner (``common.rendering_of``).
CREATE TEMP TABLE trender AS
SELECT pm, eid, p_start, code, practitioner_id, performer FROM (
    SELECT pm, eid, p_start, code, practitioner_id, sum(seconds) AS secs,
           arg_max(performer, ord) AS performer,
           row_number() OVER (PARTITION BY pm, eid, p_start, code
                              ORDER BY sum(seconds) DESC, practitioner_id) AS rn
    FROM tpool GROUP BY pm, eid, p_start, code, practitioner_id
) WHERE rn = 1;

-- The running total's first day at a number of minutes (time_dos threshold_day).
CREATE TEMP TABLE trun AS
SELECT pm, eid, p_start, code, d, sum(seconds) OVER (PARTITION BY pm, eid, p_start, code ORDER BY ord) AS cum
FROM tpool;

CREATE TEMP TABLE dec_base AS
WITH b AS (
    SELECT w.pm, w.y, w.eid, c.code, c.family, w.p_start, w.p_end, w.is_open, w.cfail, w.program,
           w.c_enr, w.c_consent, w.c_bp, w.c_est, w.c_visit,
           coalesce(s.secs, 0) // 60 AS m, coalesce(s.called, false) AS called, s.parts,
           CASE WHEN r.performer = 'staff' THEN e.bp ELSE r.practitioner_id END AS who,
           c.min_minutes, c.max_minutes, c.max_units, c.requires_interactive,
           days_left(w.is_open, w.w_first, w.w_last, w.as_of) AS lft, o.time_dos, o.device_dos, w.w_last,
           c.min_conditions IS NOT NULL AND e.ndx < c.min_conditions AS c_cc,
           c.complexity IS NOT NULL AND coalesce(e.complexity, '') <> c.complexity AS c_cx
    FROM w JOIN code c ON c.year = w.y AND c.program = w.program AND c.base_code IS NULL
         AND ((c.family IN ('treatment_management', 'care_management') AND w.kind = 'month')
              OR (c.family = 'data_interpretation' AND w.kind = 'device'))
    JOIN yr o ON o.year = w.y
    LEFT JOIN tsum s ON s.pm = w.pm AND s.eid = w.eid AND s.p_start = w.p_start AND s.code = c.code
    LEFT JOIN trender r ON r.pm = w.pm AND r.eid = w.eid AND r.p_start = w.p_start AND r.code = c.code
    JOIN enr e ON e.pm = w.pm AND e.eid = w.eid
)
SELECT pm, y, eid, code, family, p_start, p_end, is_open, cfail, m, who, parts,
       program, c_enr, c_consent, c_bp, c_est, c_visit, max_minutes IS NOT NULL AND m > max_minutes AS over,
       c_cc, c_cx,
       CASE WHEN max_minutes IS NOT NULL AND m > max_minutes THEN 'F'
            WHEN m >= min_minutes THEN 'P' WHEN lft > 0 THEN 'W' ELSE 'F' END AS v1,
       CASE WHEN NOT requires_interactive OR called THEN 'P' WHEN lft > 0 THEN 'W' ELSE 'F' END AS v2,
       CASE WHEN c_cc OR c_cx THEN 'F' ELSE 'P' END AS v3,
       CASE WHEN m >= min_minutes AND (max_minutes IS NULL OR m <= max_minutes) THEN max_units ELSE 0 END
           AS draft_units,
       CASE WHEN (family IN ('treatment_management', 'care_management') AND time_dos = 'month_end')
                THEN least(p_end, w_last_enr)
            WHEN (family = 'data_interpretation' AND device_dos = 'period_end') THEN p_end
            ELSE (SELECT min(r.d) FROM trun r WHERE r.pm = b.pm AND r.eid = b.eid AND r.p_start = b.p_start
                  AND r.code = b.code AND r.cum // 60 >= b.min_minutes) END AS dos
FROM (SELECT b.*, coalesce(e.e_end, b.p_end) AS w_last_enr FROM b JOIN enr e USING (pm, eid)) b;
"""

STATUS = """
    CASE WHEN cfail OR 'F' IN (v1, v2, v3) THEN 'not_billable'
         WHEN is_open OR 'W' IN (v1, v2, v3) THEN 'reachable'
         WHEN draft_units > 0 THEN 'billable'
         ELSE 'not_billable' END
"""

# The blocking checks of a decision (failed or pending requirements), in the engine's order
# of reasons: the common checks, then the family's (``_lost`` reads them for the summary).
COMMON_CHECKS = """
    CASE WHEN c_enr THEN 'common.enrollment_active' END, CASE WHEN c_consent THEN 'common.consent' END,
    CASE WHEN c_bp THEN 'common.billing_practitioner' END,
    CASE WHEN c_est THEN lower(program) || '.established_patient' END,
    CASE WHEN c_visit THEN lower(program) || '.initiating_visit' END
"""
DEVICE_CHECKS = """
    CASE WHEN v2 <> 'P' THEN 'rtm.device.kind' END,
    CASE WHEN v1 <> 'P' THEN lower(program)
         || CASE WHEN over THEN '.device.max_days' ELSE '.device.min_days' END END
"""
SETUP_CHECKS = """
    CASE WHEN v1 <> 'P' THEN lower(program) || CASE WHEN stop = 'before' THEN '.setup.before_data'
                                                   ELSE '.setup.first_period' END END,
    CASE WHEN v2 <> 'P' THEN lower(program) || '.setup.min_days' END,
    CASE WHEN v3 <> 'P' THEN lower(program) || '.setup.device' END
"""
BASE_CHECKS = """
    CASE WHEN v1 <> 'P' THEN lower(program)
         || CASE WHEN family = 'data_interpretation' THEN '.interpretation.'
                 WHEN family = 'care_management' THEN '.time.' ELSE '.tm.' END
         || CASE WHEN over THEN 'max_minutes' ELSE 'min_minutes' END END,
    CASE WHEN v2 <> 'P' THEN lower(program) || '.tm.interactive' END,
    CASE WHEN c_cc THEN lower(program) || '.chronic_conditions' END,
    CASE WHEN c_cx THEN lower(program) || '.complexity' END
"""
# Care management's eligibility comes before an add-on's minutes (``care_management.decide``).
ADDON_CHECKS = """
    CASE WHEN c_cc THEN lower(program) || '.chronic_conditions' END,
    CASE WHEN c_cx THEN lower(program) || '.complexity' END,
    CASE WHEN v1 <> 'P' THEN lower(program)
         || CASE WHEN family = 'care_management' THEN '.time.' ELSE '.tm.' END || 'add_on_minutes' END,
    CASE WHEN v2 <> 'P' THEN lower(program)
         || CASE WHEN family = 'care_management' THEN '.time.' ELSE '.tm.' END || 'add_on_base' END
"""

FINISH = f"""
SELECT pm, y, eid, code, p_start, p_end, {STATUS} AS status,
       CASE WHEN ({STATUS}) = 'not_billable' OR 'W' IN (v1, v2, v3) THEN 0 ELSE draft_units END AS units,
       CASE WHEN ({STATUS}) = 'billable' THEN dos END AS dos, {{extras}},
       concat_ws(',', {COMMON_CHECKS}, {{checks}}) AS checks
FROM {{table}}
"""

NONE = "NULL::VARCHAR AS who, NULL::VARCHAR[] AS parts"
TIMED = "who, parts"

DECISIONS = f"""
WITH base AS ({FINISH.format(table="dec_base", extras=TIMED, checks=BASE_CHECKS)}),
addon AS (
    SELECT w.pm, w.y, w.eid, c.code, w.p_start, w.p_end, w.is_open, w.cfail,
           w.program, w.c_enr, w.c_consent, w.c_bp, w.c_est, w.c_visit,
           CASE WHEN b0.m >= c.first_minutes THEN (b0.m - c.base_min) // c.step_minutes ELSE 0 END
               AS supported,
           c.max_units AS cap, days_left(w.is_open, w.w_first, w.w_last, w.as_of) AS lft,
           b.status AS base_status, b.units AS base_units, b.dos AS base_dos,
           CASE WHEN b.units > 0 THEN b.who END AS who, b.parts, c.family,
           c.min_conditions IS NOT NULL AND e.ndx < c.min_conditions AS c_cc,
           c.complexity IS NOT NULL AND coalesce(e.complexity, '') <> c.complexity AS c_cx
    FROM w JOIN code c ON c.year = w.y AND c.program = w.program AND c.base_code IS NOT NULL
         AND c.family IN ('treatment_management', 'care_management') AND w.kind = 'month'
    JOIN enr e ON e.pm = w.pm AND e.eid = w.eid
    JOIN base b ON b.pm = w.pm AND b.eid = w.eid AND b.code = c.base_code AND b.p_start = w.p_start
    JOIN dec_base b0 ON b0.pm = w.pm AND b0.eid = w.eid AND b0.code = c.base_code AND b0.p_start = w.p_start
),
dec_addon AS (
    SELECT pm, y, eid, code, p_start, p_end, is_open, cfail, program, c_enr, c_consent, c_bp, c_est, c_visit,
           family, c_cc, c_cx,
           CASE WHEN supported > 0 THEN 'P' WHEN lft > 0 THEN 'W' ELSE 'F' END AS v1,
           CASE WHEN base_status = 'billable' OR (base_status = 'reachable' AND base_units > 0) THEN 'P'
                WHEN base_status = 'reachable' THEN 'W' ELSE 'F' END AS v2,
           CASE WHEN c_cc OR c_cx THEN 'F' ELSE 'P' END AS v3,
           CASE WHEN cap IS NULL THEN supported ELSE least(supported, cap) END AS draft_units,
           base_dos AS dos, who, parts
    FROM addon
)
{FINISH.format(table="dec_device", extras=NONE, checks=DEVICE_CHECKS)}
UNION ALL {FINISH.format(table="dec_setup", extras=NONE, checks=SETUP_CHECKS)}
UNION ALL SELECT * FROM base
UNION ALL {FINISH.format(table="dec_addon", extras=TIMED, checks=ADDON_CHECKS)}
"""

# Flags that need counts: several RTM kinds reporting in one period (option
# rtm_multiple_kinds).
LATE_FLAGS = """
SELECT DISTINCT pm, 'several RTM device kinds' FROM cnt WHERE kind IS NOT NULL AND n > 0
GROUP BY pm, eid, p_start HAVING count(*) > 1
"""
