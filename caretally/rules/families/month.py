"""Run every family for every enrollment of a patient-month, then the concurrency pass.

This is the engine minus the choice of who gets unassigned time: the allocation is an
input, so :mod:`caretally.rules.allocation` can score candidate allocations with exactly
the logic that will bill them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from caretally.model import Decision, PatientMonthFacts, ProgramFacts
from caretally.rules.families import (
    apcm,
    behavioral_health,
    care_management,
    concurrency,
    data_interpretation,
    device_supply,
    setup,
    treatment_management,
)
from caretally.rules.families.common import EnrollmentView, YearFor

if TYPE_CHECKING:
    from caretally.rules.allocation import Allocation

#: Families whose decisions do not depend on time entries, and those that do.
STATIC = (setup, device_supply, apcm)
TIMED = (treatment_management, data_interpretation, care_management, behavioral_health)


def decide(
    facts: PatientMonthFacts,
    year_for: YearFor,
    allocation: Allocation,
    static: Sequence[Decision] | None = None,
    cache: dict[tuple[str, tuple[str, ...]], list[Decision]] | None = None,
    made_static: Sequence[Decision] | None = None,
    payment_only: bool = False,
) -> list[Decision]:
    """All decisions of the patient-month under ``allocation``.

    ``static`` lets the allocation search pass in the device and set-up decisions it
    computed once, since they do not change with the allocation; ``cache`` keeps each
    enrollment's time-based decisions by the set of entries credited to it, since a
    search step moves one entry and leaves the other enrollments as they were. Both are
    only for scoring: the reasons the allocation adds are not part of the cache key.

    ``made_static`` are those device and set-up decisions when the search already made
    them (:func:`static_decisions`); the final pass then takes each enrollment's share in
    place of running those families again, in the same place of the list.

    ``payment_only`` makes the time-based decisions without what only explains them (see
    ``EnrollmentView``) and leaves the list unsorted: for scoring a trial allocation by
    its total, never for decisions that are kept. With a ``cache``, every call that
    shares it must pass the same ``payment_only``.
    """
    out: list[Decision] = [] if static is None else list(static)
    families = (*STATIC, *TIMED) if static is None else TIMED
    reuse: dict[str, list[Decision]] | None = None
    if static is None and made_static is not None:
        families = TIMED
        reuse = {}
        for d in made_static:
            reuse.setdefault(d.enrollment_id, []).append(d)
    for program in _ordered(facts):
        eid = program.enrollment.enrollment_id
        entries = tuple(e for e in facts.time if allocation.enrollment_of.get(e.entry_id) == eid)
        view = EnrollmentView(
            facts=facts,
            program=program,
            entries=entries,
            time_reasons=allocation.reasons.get(eid, ()),
            year_for=year_for,
            time_params=allocation.params,
            payment_only=payment_only,
        )
        key = (eid, tuple(e.entry_id for e in entries))
        if reuse is not None:
            out.extend(reuse.get(eid, ()))
        if cache is not None and key in cache:
            out.extend(cache[key])
            continue
        made = [d for family in families for d in family.decide(view)]
        if cache is not None:
            cache[key] = made
        out.extend(made)
    out = concurrency.resolve(facts, out, year_for)
    if payment_only:
        return out
    return sorted(out, key=lambda d: (d.enrollment_id, d.code, d.period.start))


def static_decisions(facts: PatientMonthFacts, year_for: YearFor) -> list[Decision]:
    """Device-supply and set-up decisions, before the concurrency pass."""
    out: list[Decision] = []
    for program in _ordered(facts):
        view = EnrollmentView(facts=facts, program=program, entries=(), time_reasons=(), year_for=year_for)
        for family in STATIC:
            out.extend(family.decide(view))
    return out


def _ordered(facts: PatientMonthFacts) -> list[ProgramFacts]:
    return sorted(facts.programs, key=lambda p: (p.enrollment.start_date, p.enrollment.enrollment_id))
