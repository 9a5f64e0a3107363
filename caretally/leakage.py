"""Revenue leakage: what a closed month would have earned had its near misses been reached.

A near miss is a code the month run did not bill for a reason the team could have fixed:
a few days of data short, a few minutes short, the minutes there but no live call, or a
paperwork gap (consent, set-up date). Each is valued as the code's payment minus whatever
cheaper code was billed in its place, so the report never double counts a period.

The windows (how many days or minutes count as "near") are report settings, not billing
rules: they decide what the program manager sees, never what is billed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Engine

from caretally.billing.evaluate import Progress, evaluate_month
from caretally.billing.payers import PayerRules
from caretally.model import Decision, Period, ReasonKind, Status
from caretally.worklist import ZERO, _amount, _threshold

DAYS_WINDOW = 3
MINUTES_WINDOW = 5

#: Reason buckets, in the order a report lists them, with the words a manager reads.
BUCKETS = {
    "days_short": "a few days of data short",
    "minutes_short": "a few minutes short",
    "no_live_call": "minutes met but no live call",
    "no_consent": "consent missing or dated after the service",
    "no_setup": "device set-up not recorded",
}


@dataclass(frozen=True)
class NearMiss:
    patient_id: str
    enrollment_id: str
    code: str
    period: Period
    bucket: str
    value: Decimal
    detail: str


@dataclass
class LeakageReport:
    month: str
    misses: list[NearMiss] = field(default_factory=list)
    billed: Decimal = ZERO

    def by_bucket(self) -> dict[str, tuple[int, int, Decimal]]:
        """bucket → (near misses, distinct patients, value)."""
        out: dict[str, tuple[int, int, Decimal]] = {}
        for bucket in BUCKETS:
            hits = [m for m in self.misses if m.bucket == bucket]
            if hits:
                out[bucket] = (
                    len(hits),
                    len({m.patient_id for m in hits}),
                    sum((m.value for m in hits), ZERO),
                )
        return out

    @property
    def total(self) -> Decimal:
        return sum((m.value for m in self.misses), ZERO)

    def to_json(self) -> dict[str, object]:
        return {
            "month": self.month,
            "billed_expected_payment": str(self.billed),
            "leakage": str(self.total),
            "patients": len({m.patient_id for m in self.misses}),
            "by_reason": {
                b: {"label": BUCKETS[b], "near_misses": n, "patients": p, "value": str(v)}
                for b, (n, p, v) in self.by_bucket().items()
            },
            "near_misses": [
                {
                    "patient_id": m.patient_id,
                    "enrollment_id": m.enrollment_id,
                    "code": m.code,
                    "period_start": str(m.period.start),
                    "period_end": str(m.period.end),
                    "reason": m.bucket,
                    "value": str(m.value),
                    "detail": m.detail,
                }
                for m in self.misses
            ],
        }


def _classify(d: Decision, days_window: int, minutes_window: int) -> tuple[str, str] | None:
    failed = list(d.blocking)
    if not failed or any(r.kind is ReasonKind.CONFLICT for r in failed):
        return None  # another service won the period: not revenue that was there to take
    ids = {r.rule_id for r in failed}
    m = d.measures
    if any(i.endswith(".consent") for i in ids) and len(failed) == 1:
        return "no_consent", failed[0].message
    if any(i.endswith("setup.device") for i in ids) and len(failed) == 1:
        return "no_setup", failed[0].message
    day_fails = [r for r in failed if r.rule_id.endswith("min_days")]
    if day_fails and len(failed) == len(day_fails):
        short = (m.min_days or 0) - (m.days or 0)
        if 0 < short <= days_window:
            return "days_short", day_fails[0].message
        return None
    minute_fails = [r for r in failed if r.rule_id.endswith(("min_minutes", "add_on_minutes"))]
    call_fails = [r for r in failed if r.rule_id.endswith(".interactive")]
    rest = [
        r
        for r in failed
        if r not in minute_fails and r not in call_fails and not r.rule_id.endswith("add_on_base")
    ]
    if rest:
        return None
    if call_fails and not minute_fails:
        return "no_live_call", call_fails[0].message
    if minute_fails:
        short = (_threshold(d) or 0) - (m.minutes or 0)
        if 0 < short <= minutes_window:
            label = minute_fails[0].message + ("; and no live call" if call_fails else "")
            return "minutes_short", label
    return None


def leakage_report(
    engine: Engine,
    org_id: str,
    month: Period,
    rules: PayerRules,
    *,
    days_window: int = DAYS_WINDOW,
    minutes_window: int = MINUTES_WINDOW,
    progress: Progress | None = None,
) -> LeakageReport:
    report = LeakageReport(month.start.strftime("%Y-%m"))
    for facts, decisions in evaluate_month(engine, org_id, month, rules, progress=progress):
        billed = [d for d in decisions if d.status is Status.BILLABLE]
        report.billed += sum((d.expected_payment or ZERO for d in billed), ZERO)
        by_period: dict[tuple[str, Period], list[Decision]] = defaultdict(list)
        for d in billed:
            by_period[(d.enrollment_id, d.period)].append(d)
        best: dict[tuple[str, Period, str], NearMiss] = {}
        for d in decisions:
            if d.status is not Status.NOT_BILLABLE:
                continue
            found = _classify(d, days_window, minutes_window)
            if found is None:
                continue
            bucket, detail = found
            year = rules.for_payer(facts.payer).for_date(d.period.end)
            exclusive = year.excludes(d.code)
            replaced = sum(
                (
                    b.expected_payment or ZERO
                    for b in by_period[(d.enrollment_id, d.period)]
                    if b.code in exclusive
                ),
                ZERO,
            )
            value = _amount(year, d.code) - replaced
            if value <= 0:
                continue
            miss = NearMiss(facts.patient_id, d.enrollment_id, d.code, d.period, bucket, value, detail)
            # One near miss per enrollment, period and either/or group (lanes included): the most valuable.
            key = (d.enrollment_id, d.period, min(year.either_or_group(d.code)))
            if key not in best or best[key].value < value:
                best[key] = miss
        report.misses.extend(sorted(best.values(), key=lambda m: (m.patient_id, m.period.start, m.code)))
    return report
