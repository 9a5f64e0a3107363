"""What the bundle's rows may point at: ids already in the database plus ids in this bundle.

Files are checked in dependency order (practitioners and patients first, readings and
time entries last), and each accepted row registers itself here before the next file
is read. A row that was rejected registers where it was rejected instead, so rows that
point at it can say why they are rejected too.

The first accepted occurrence of an id in the bundle wins over the database copy and
over later occurrences (which the duplicate check rejects when they differ).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from caretally.ingest import values as v
from caretally.model import PerformerClass
from caretally.store import schema


@dataclass
class Catalog:
    """One kind of record: id → the attribute other rows need, plus rejected ids."""

    known: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # id → "file:line" of the rejected row
    _seen_in_bundle: set[str] = field(default_factory=set)

    def accept(self, key: str, attribute: str) -> bool:
        """Register ``key``; ``False`` when an earlier row of the bundle already did."""
        if key in self._seen_in_bundle:
            return False
        self._seen_in_bundle.add(key)
        self.known[key] = attribute
        return True

    def reject(self, key: str, where: str) -> None:
        self.rejected.setdefault(key, where)


@dataclass
class ReferenceIndex:
    """Ids rows may reference, with the one attribute each cross-check needs.

    patients → IANA zone (to derive local dates); practitioners → performer class;
    devices → owning patient; enrollments are (patient, program) pairs. ``births`` holds
    each patient's birth date as ISO text and ``not_after`` the latest instant a reading
    may carry (import time plus the allowed clock skew): the plausibility bounds both
    reading paths apply, kept here because both paths already consult this index.
    """

    patients: Catalog = field(default_factory=Catalog)
    practitioners: Catalog = field(default_factory=Catalog)
    devices: Catalog = field(default_factory=Catalog)
    enrolled: set[tuple[str, str]] = field(default_factory=set)
    rejected_enrollments: dict[tuple[str, str], str] = field(default_factory=dict)
    births: dict[str, str] = field(default_factory=dict)
    not_after: datetime | None = None
    clock_skew_text: str = ""

    def performer(self, practitioner_id: str) -> PerformerClass | None:
        found = self.practitioners.known.get(practitioner_id)
        return PerformerClass(found) if found else None


#: The columns whose values are looked up in each catalog (``Row.ref`` in ``rows.py``).
REFERS_TO: dict[str, tuple[str, ...]] = {
    "patients": ("patient_id",),
    "practitioners": ("practitioner_id", "billing_practitioner_id"),
    "devices": ("device_id",),
}


@dataclass(frozen=True)
class Scope:
    """The ids a small request refers to, so only those are read from the database.

    A live request carries a few records; reading every patient and device of a large
    practice for each one would cost more than the request itself.
    """

    patients: frozenset[str] = frozenset()
    practitioners: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()

    @classmethod
    def of(cls, records: Mapping[str, Sequence[Mapping[str, Any]]]) -> Scope:
        """The ids named by every column that refers to a patient, practitioner or device.

        Read exactly as the row checker reads them (``values.text``: a JSON number is its
        decimal spelling), so an id the checker will look up is never left out of the scope
        and refused as unknown although it is stored.
        """

        def ids(*names: str) -> frozenset[str]:
            found: set[str] = set()
            for rows in records.values():
                if not isinstance(rows, list | tuple):
                    continue
                for row in rows:
                    if not isinstance(row, Mapping):
                        continue
                    for name in names:
                        value = row.get(name)
                        if v.is_blank(value):
                            continue
                        try:
                            found.add(v.text(value))
                        except v.FieldError:
                            continue  # the row checker reports it
            return frozenset(found)

        return cls(ids(*REFERS_TO["patients"]), ids(*REFERS_TO["practitioners"]), ids(*REFERS_TO["devices"]))


_CHUNK = 500


def _chunks(ids: frozenset[str]) -> Iterator[list[str]]:
    ordered = sorted(ids)
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


def load_from_database(
    conn: Connection, org_id: str, stems: set[str], scope: Scope | None = None
) -> ReferenceIndex:
    """Preload only the id maps the present files will consult.

    These are narrow (id plus one attribute) so even a large practice fits in memory, and
    one query per table beats a lookup per row. With ``scope`` only the ids it names are
    read (a live request); ids it does not name are then unknown.
    """
    index = ReferenceIndex()

    def rows(query: Any, column: Any, wanted: frozenset[str]) -> Iterator[Any]:
        if scope is None:
            yield from conn.execute(query)
            return
        for chunk in _chunks(wanted):
            yield from conn.execute(query.where(column.in_(chunk)))

    needs_patients = stems & {"enrollments", "devices", "readings", "time_entries", "visits"}
    if needs_patients:
        t = schema.patients
        query = select(t.c.patient_id, t.c.timezone, t.c.birth_date).where(t.c.org_id == org_id)
        for pid, tz, birth in rows(query, t.c.patient_id, scope.patients if scope else frozenset()):
            index.patients.known[pid] = tz
            index.births[pid] = birth.isoformat()
    if stems & {"enrollments", "time_entries", "visits"}:
        t = schema.practitioners
        query = select(t.c.practitioner_id, t.c.performer_class).where(t.c.org_id == org_id)
        for prid, cls in rows(query, t.c.practitioner_id, scope.practitioners if scope else frozenset()):
            index.practitioners.known[prid] = cls
    if "readings" in stems:
        t = schema.devices
        query = select(t.c.device_id, t.c.patient_id).where(t.c.org_id == org_id)
        for did, pid in rows(query, t.c.device_id, scope.devices if scope else frozenset()):
            index.devices.known[did] = pid
    if "time_entries" in stems:
        t = schema.enrollments
        query = select(t.c.patient_id, t.c.program).where(t.c.org_id == org_id).distinct()
        found = rows(query, t.c.patient_id, scope.patients if scope else frozenset())
        index.enrolled.update((pid, prog) for pid, prog in found)
    return index
