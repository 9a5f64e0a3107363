"""The engine on the months the columnar pass flags: trials scored with full decisions or payment-only.

    python bench/allocation.py sqlite:////path/to/bench.sqlite [--rounds 3] [--months N]

Builds March 2026's facts (organization ``bench``, as ``bench/run.py`` imports it), keeps
the patient-months the columnar pass flags (untagged time with several candidate
programs, on the synthetic practice), then evaluates them alternately the way the engine
scored trial allocations before (every trial a full ``month.decide``, with reasons) and
the way it does now (``evaluate_patient_month``: trials scored ``payment_only``). The
decisions must be equal (asserted); CPU seconds and the ratio are printed per round —
on a shared machine read the ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from caretally.billing.evaluate import _facts_by_payer_options  # noqa: E402
from caretally.billing.payers import PayerRules  # noqa: E402
from caretally.columnar.decide import decide_months  # noqa: E402
from caretally.dates import parse_month  # noqa: E402
from caretally.model import Decision, PatientMonthFacts  # noqa: E402
from caretally.rules.allocation import Allocation, allocate, total  # noqa: E402
from caretally.rules.engine import evaluate_patient_month  # noqa: E402
from caretally.rules.families import month  # noqa: E402
from caretally.rules.intervals import counts_once, trim_overlaps  # noqa: E402
from caretally.rules.params import RuleBook, RuleYear  # noqa: E402
from caretally.store.db import open_database  # noqa: E402


def full_trials(facts: PatientMonthFacts, book: RuleBook) -> list[Decision]:
    """The engine as it was before payment-only scoring: every trial a full decision list."""
    if counts_once(book.for_date(facts.month.end)):
        facts = trim_overlaps(facts)

    def year_for(day: date) -> RuleYear:
        return book.for_date(day)

    static = month.static_decisions(facts, year_for)
    cache: dict[tuple[str, tuple[str, ...]], list[Decision]] = {}
    scores: dict[frozenset[tuple[str, str]], Decimal] = {}

    def score(assignment: Mapping[str, str]) -> Decimal:
        key = frozenset(assignment.items())
        if key not in scores:
            trial = Allocation(enrollment_of=dict(assignment), program_of={})
            scores[key] = total(month.decide(facts, year_for, trial, static, cache))
        return scores[key]

    allocation = allocate(facts, book.for_date(facts.month.end), score)
    return month.decide(facts, year_for, allocation, made_static=static)


def _cpu(
    fn: Callable[[PatientMonthFacts, RuleBook], list[Decision]],
    work: list[tuple[PatientMonthFacts, RuleBook]],
) -> tuple[float, list[list[Decision]]]:
    began = time.process_time()
    out = [fn(f, b) for f, b in work]
    return time.process_time() - began, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="an imported bench database")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--months", type=int, default=0, help="at most this many flagged months (0: all)")
    args = parser.parse_args(argv)
    engine = open_database(args.url, "bench")
    rules = PayerRules.load()
    facts = list(
        _facts_by_payer_options(engine, "bench", parse_month("2026-03"), rules, None, None, None, {})
    )
    engine.dispose()
    result = decide_months((f, rules.for_payer(f.payer)) for f in facts)
    work = [(f, rules.for_payer(f.payer)) for f in facts if f.patient_id in result.flagged]
    if args.months:
        work = work[: args.months]
    print(f"{len(facts):,} patient-months, {len(work):,} flagged", flush=True)
    for n in range(1, args.rounds + 1):
        before, a = _cpu(full_trials, work)
        after, b = _cpu(evaluate_patient_month, work)
        assert a == b, "payment-only scoring changed a decision"
        print(
            f"round {n}: full trials {before:.2f} s, payment-only {after:.2f} s, "
            f"after ÷ before {after / before:.2f}"
        )


if __name__ == "__main__":
    main()
