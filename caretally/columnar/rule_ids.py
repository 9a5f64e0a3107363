"""Every rule id the engine's families can write, and how the columnar pass answers for it.

A decided month's typed row keeps its blocking rule ids, and the run summary counts them,
so the pass must produce the same ids the engine would — or keep such months away from
itself with a flag. This table is that promise, one row per rule-id pattern as the
families spell it (``{}`` stands for the program or a prefix). ``tests/columnar/
test_rule_ids.py`` reads the families' source and fails when a pattern appears that is
not here (a new family rule cannot silently diverge) or one here no longer exists.

Kinds: ``decided`` — the pass computes the check; ``advisory`` — never blocking, so never
in a typed row; ``flagged`` — the months where it can be met go to the engine (the value
after the colon is the flag that sends them); ``no block`` — it cannot fail on a month the
pass decides (the value says why).
"""

from __future__ import annotations

DECIDED = "decided"
ADVISORY = "advisory"

KNOWN: dict[str, str] = {
    # common checks and notes
    "common.enrollment_active": DECIDED,
    "common.consent": DECIDED,
    "common.billing_practitioner": DECIDED,
    "{}.established_patient": DECIDED,
    "{}.initiating_visit": DECIDED,  # the CY2027 proposal's blocking form (proposed years are flagged)
    "docs.initiating_visit": ADVISORY,
    "docs.order_date": ADVISORY,
    "period.open": ADVISORY,
    "pricing.amount": ADVISORY,
    "rules.provisional": ADVISORY,
    "time.overlap": ADVISORY,
    "time.overlap_other_patient": ADVISORY,
    "time.unassigned": ADVISORY,  # allocation.py: entries no enrollment may count
    "time.enrollment": ADVISORY,
    "time.allocation": ADVISORY,
    "patient.death": "flagged: date of death",
    # set-up and device supply
    "{}.setup.before_data": DECIDED,
    "{}.setup.device": DECIDED,
    "{}.setup.first_period": DECIDED,
    "{}.setup.min_days": DECIDED,
    "{}.setup.once_per_episode": "flagged: billing history",
    "{}.device.min_days": DECIDED,
    "{}.device.max_days": DECIDED,
    "rtm.device.kind": DECIDED,
    # time ladders: treatment management ({}.tm), care management ({}.time), 99091
    "{}.tm": DECIDED,
    "{}.time": DECIDED,
    "{}.interpretation": DECIDED,
    "{}.min_minutes": DECIDED,  # and its max_minutes twin (ladder.minutes_check)
    "{}.interactive": DECIDED,
    "{}.add_on_minutes": DECIDED,
    "{}.add_on_base": DECIDED,
    "{}.same_day_em": "flagged: visits",
    "{}.chronic_conditions": DECIDED,
    "{}.complexity": DECIDED,
    "{}.lane": DECIDED,
    # families whose programs the pass does not decide
    "apcm.chronic_conditions": "flagged: program not decided by the columnar pass",
    "apcm.level": "flagged: program not decided by the columnar pass",
    "apcm.qmb": "flagged: program not decided by the columnar pass",
    "{}.episode_month": "flagged: program not decided by the columnar pass",
    "{}.with_base": "flagged: program not decided by the columnar pass",
    # behavioral health spells its own add-on ids (care management's come from the ladder)
    "{}.time.add_on_base": "flagged: program not decided by the columnar pass",
    "{}.time.add_on_minutes": "flagged: program not decided by the columnar pass",
    "coverage.diagnoses": "flagged: payer coverage overlay",
    "coverage.prior_authorization": "flagged: payer coverage overlay",
    "coverage.max_units_per_year": "flagged: payer coverage overlay",
    # the concurrency pass
    "concurrency.exclusive_with": DECIDED,
    "concurrency.add_on_base": DECIDED,
    "concurrency.one_practitioner": "flagged: several enrollments",
    "concurrency.never_together": DECIDED,  # settled over the typed outcomes (decide.py)
    "concurrency.not_same_practitioner": DECIDED,
    "concurrency.with_base": "flagged: program not decided by the columnar pass",
    "time.no_double_count": "no block: one enrollment bills one lane, and its add-ons list no entries",
}


def decided_pattern(rule_id: str) -> str | None:
    """The ``decided`` pattern a concrete rule id matches (``rpm.tm.min_minutes`` → ``{}.min_minutes``)."""
    rule_id = rule_id.replace("max_minutes", "min_minutes")
    for pattern, how in KNOWN.items():
        if how != DECIDED:
            continue
        if "{}" not in pattern:
            if rule_id == pattern:
                return pattern
        elif rule_id.startswith(pattern.split("{}")[0]) and rule_id.endswith(pattern.split("{}")[1]):
            return pattern
    return None
