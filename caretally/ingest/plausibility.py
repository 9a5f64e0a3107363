"""Warnings about time entries that are valid one by one but implausible together.

One performer cannot do two things at once, and nobody works more than 16 hours of
care management in a day; either pattern usually means a duplicated export or a timer
left running. Such entries are still stored (the rules count overlapping time once),
but the import lists them so a person looks. An entry covers ``[started_at,
started_at + seconds)``; entries already stored count too, so a bundle that overlaps
last week's import is caught.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from caretally.errors import Problem
from caretally.store import schema

#: More than this much time by one performer on one (patient-local) day is a warning.
LONG_DAY_SECONDS = 16 * 3600
#: Stored entries this far around the bundle's entries are compared with them (entries
#: last at most 12 hours, and a local date spans at most 26 hours of UTC).
STORED_MARGIN = timedelta(days=2)
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Entry:
    entry_id: str
    practitioner_id: str
    started_at: datetime
    seconds: int
    local_date: date
    #: (file label, line) for an entry of this bundle; ``None`` for one already stored.
    where: tuple[str, int] | None = None

    @property
    def ends_at(self) -> datetime:
        return self.started_at + timedelta(seconds=self.seconds)


def overlaps(entries: Iterable[Entry]) -> Iterator[tuple[Entry, Entry, int]]:
    """``(later, earlier, seconds of overlap)`` for each entry that starts before an earlier
    entry of the same performer has ended (compared with the one ending last)."""
    by_performer: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        by_performer[entry.practitioner_id].append(entry)
    for performer in sorted(by_performer):
        active: Entry | None = None
        active_end = datetime.min  # each end computed once: a bulk import has 100,000s of entries
        for entry in sorted(by_performer[performer], key=lambda e: (e.started_at, e.entry_id)):
            end = entry.ends_at
            if active is not None and entry.started_at < active_end:
                shared = min(end, active_end) - entry.started_at
                yield entry, active, int(shared.total_seconds())
            if active is None or end > active_end:
                active, active_end = entry, end


def _clock(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def time_warnings(bundle: Sequence[Entry], stored: Iterable[Entry]) -> list[Problem]:
    """Overlap and long-day warnings that involve at least one entry of this bundle.

    A bundle entry replaces the stored entry with the same id (it is an update).
    """
    merged: dict[str, Entry] = {e.entry_id: e for e in stored}
    seen: set[str] = set()
    for entry in bundle:
        if entry.entry_id not in seen:  # the first copy wins, as in the import
            seen.add(entry.entry_id)
            merged[entry.entry_id] = entry
    warnings: list[Problem] = []
    for later, earlier, shared in overlaps(merged.values()):
        anchor = later if later.where is not None else earlier
        if anchor.where is None:
            continue
        other = earlier if anchor is later else later
        minutes = max(1, round(shared / 60))
        message = (
            f"time entry {anchor.entry_id} by {anchor.practitioner_id} overlaps {other.entry_id} "
            f"(from {_clock(other.started_at)}) by {minutes} min; the overlap is counted once"
        )
        warnings.append(Problem(anchor.where[0], anchor.where[1], "started_at", "overlapping_time", message))
    days: dict[tuple[str, date], list[Entry]] = defaultdict(list)
    for entry in merged.values():
        days[(entry.practitioner_id, entry.local_date)].append(entry)
    for (performer, day), group in sorted(days.items()):
        total = sum(e.seconds for e in group)
        ours = [e for e in group if e.where is not None]
        if total <= LONG_DAY_SECONDS or not ours:
            continue
        last = max(ours, key=lambda e: e.where or ("", 0))
        assert last.where is not None
        message = (
            f"{performer} has {total / 3600:.1f} hours of time entries on {day} "
            f"({len(group)} entries), more than {LONG_DAY_SECONDS // 3600}"
        )
        warnings.append(Problem(last.where[0], last.where[1], "practitioner_id", "long_day", message))
    warnings.sort(key=lambda p: (p.file, p.line or 0, p.code))
    return warnings


def _entry(row: Any) -> Entry:
    return Entry(row.entry_id, row.practitioner_id, row.started_at, row.seconds, row.local_date)


def stored_entries_near(conn: Connection, org_id: str, bundle: Sequence[Entry]) -> list[Entry]:
    """Stored entries of the bundle's performers within ``STORED_MARGIN`` of its entries."""
    if not bundle:
        return []
    t = schema.time_entries
    first = min(e.started_at for e in bundle) - STORED_MARGIN
    last = max(e.ends_at for e in bundle) + STORED_MARGIN
    performers = sorted({e.practitioner_id for e in bundle})
    found: list[Entry] = []
    columns = (t.c.entry_id, t.c.practitioner_id, t.c.started_at, t.c.seconds, t.c.local_date)
    for start in range(0, len(performers), _CHUNK):
        chunk = performers[start : start + _CHUNK]
        query = select(*columns).where(
            t.c.org_id == org_id,
            t.c.practitioner_id.in_(chunk),
            t.c.started_at >= first,
            t.c.started_at <= last,
        )
        found.extend(_entry(row) for row in conn.execute(query))
    return found


def stored_overlaps(
    conn: Connection, org_id: str, start: datetime, end: datetime
) -> list[tuple[Entry, Entry, int]]:
    """Overlapping stored entries that start in ``[start, end)``: for a run's summary."""
    t = schema.time_entries
    query = select(t.c.entry_id, t.c.practitioner_id, t.c.started_at, t.c.seconds, t.c.local_date).where(
        t.c.org_id == org_id, t.c.started_at >= start - timedelta(hours=12), t.c.started_at < end
    )
    entries = [_entry(row) for row in conn.execute(query)]
    return [o for o in overlaps(entries) if o[0].started_at >= start]
