"""No minute counts twice: a time entry is an interval, and one performer is in one place.

Two entries by the same performer for the same patient whose intervals overlap describe
the same minutes at most once. The sweep keeps the earlier-started entry whole (ties: the
lower entry id) and credits a later entry only with the part of its interval that no
earlier entry covers — whichever programs the entries name, so the same minutes logged for
RPM and for CCM count toward one service only. The decisions say which entry was cut and
by which (``time.overlap``).

Overlaps with *other* patients' entries (the facts carry them in
``TimeFact.other_patient_overlaps``) cannot both be true either, but which one is wrong is
a question for the practice, not the engine: nothing is cut, and every decision counting
such an entry carries the compliance warning ``time.overlap_other_patient``.

Entries without a start time are taken at their logged length; they cannot be placed.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from caretally.model import PatientMonthFacts, TimeFact
from caretally.rules.params import RuleYear


def counts_once(year: RuleYear) -> bool:
    """The rule-year's ``time_counts_once`` global (required in a base year)."""
    return bool(year.rule_global("time_counts_once").value)


def trim_overlaps(facts: PatientMonthFacts) -> PatientMonthFacts:
    """The facts with each entry's ``seconds`` reduced to the minutes no earlier entry covers."""
    by_performer: dict[str, list[TimeFact]] = {}
    for e in facts.time:
        if e.started_at is not None and e.seconds > 0:
            by_performer.setdefault(e.practitioner_id, []).append(e)
    trimmed: dict[str, TimeFact] = {}
    for entries in by_performer.values():
        if len(entries) < 2:
            continue
        covered: list[tuple[datetime, datetime, str]] = []  # merged intervals, with the first id
        for e in sorted(entries, key=lambda x: (x.started_at, x.entry_id)):
            start, end = e.started_at, e.ended_at
            assert start is not None and end is not None
            overlap = 0
            by: list[str] = []
            for c_start, c_end, c_id in covered:
                lo, hi = max(start, c_start), min(end, c_end)
                if lo < hi:
                    overlap += int((hi - lo).total_seconds())
                    by.append(c_id)
            if overlap:
                trimmed[e.entry_id] = replace(
                    e, seconds=max(0, e.seconds - overlap), logged_seconds=e.seconds, overlaps=tuple(by)
                )
            covered = _merge(covered, (start, end, e.entry_id))
    if not trimmed:
        return facts
    return replace(facts, time=tuple(trimmed.get(e.entry_id, e) for e in facts.time))


def _merge(
    covered: list[tuple[datetime, datetime, str]], new: tuple[datetime, datetime, str]
) -> list[tuple[datetime, datetime, str]]:
    """Add an interval to a list of disjoint ones, keeping them disjoint (so no overlap counts twice).

    Each kept piece remembers the entry that first covered it, so a reason can name it.
    """
    start, end, entry_id = new
    out: list[tuple[datetime, datetime, str]] = []
    pieces = [(start, end)]
    for c in covered:
        out.append(c)
        rest: list[tuple[datetime, datetime]] = []
        for p_start, p_end in pieces:
            if p_end <= c[0] or p_start >= c[1]:
                rest.append((p_start, p_end))
                continue
            if p_start < c[0]:
                rest.append((p_start, c[0]))
            if p_end > c[1]:
                rest.append((c[1], p_end))
        pieces = rest
    out.extend((p_start, p_end, entry_id) for p_start, p_end in pieces)
    return sorted(out)
