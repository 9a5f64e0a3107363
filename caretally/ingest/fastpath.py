"""The readings fast path: eight text cells in, one database-ready tuple out.

Readings run to millions per import, so a clean row must not pay for the fault-collecting
machinery of ``check_row`` (a ``Row``, a dict of values, a parser call per column) nor
for building Python ``datetime``/``date`` objects that the driver would only turn back
into text. ``clean_batch`` accepts exactly the rows ``check_reading`` would accept
without a fault and gives the stored columns already spelled the way the store keeps
them; anything unusual is handed back and the caller sends it down the full check,
which then names the faults. ``rows.fast_reading`` runs one row through the same code,
and ``tests/ingest`` holds it to the full check's results.

Stored spellings: instants are naive UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` (what
SQLAlchemy writes for a DateTime on SQLite, and valid timestamp input for PostgreSQL)
and local dates are ISO ``YYYY-MM-DD``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from caretally.dates import zone
from caretally.ingest.references import ReferenceIndex
from caretally.model import Transmission

#: Column order of the tuples ``clean_reading`` returns (the readings table minus org/id).
READING_STORED: tuple[str, ...] = (
    "reading_key",
    "reading_id",
    "patient_id",
    "device_id",
    "measured_at",
    "local_date",
    "type",
    "value",
    "unit",
    "transmission",
    "extra",
)
#: The stored form of "no extra columns": JSON null, as SQLAlchemy itself writes it.
NO_EXTRA = "null"
#: The source cells ``clean_batch`` reads, in the order ``pick`` must give them.
READING_CELLS: tuple[str, ...] = (
    "reading_id",
    "patient_id",
    "device_id",
    "measured_at",
    "type",
    "value",
    "unit",
    "transmission",
)
ID_MAX = 64
TYPE_MAX = 64
UNIT_MAX = 32
VALUE_MAX = 64  # cleaning.VALUE_MAX, the documented limit the full check applies
#: Later than any instant a reading can carry: the bound when no import clock is set.
NO_LATER_BOUND = "9999-12-31 23:59:59.999999"
TRANSMISSIONS = {t.value: t.value for t in Transmission}
_HOUR = timedelta(hours=1) - timedelta(microseconds=1)

ReadingTuple = tuple[str, str | None, str, str, str, str, str, str, str, str, str]


class LocalDays:
    """Patient-local dates of UTC instants, remembered per zone and UTC hour.

    Converting every instant with ``zoneinfo`` costs more than the rest of the row's
    checks together. Within one UTC hour the local date is the same for every instant
    unless a local midnight or an offset change falls inside that hour; the first and
    last instants of the hour tell which, and only such hours (half-hour zones at local
    midnight, DST changes) are converted instant by instant.
    """

    def __init__(self) -> None:
        self.zones: dict[str, dict[str, str | None]] = {}

    def of(self, tz: str, stamp: str) -> str:
        """The local date of ``stamp`` (stored UTC text) in zone ``tz``, as ISO text."""
        hours = self.zones.get(tz)
        if hours is None:
            hours = self.zones[tz] = {}
        key = stamp[:13]
        if key in hours:
            found = hours[key]
        else:
            found = hours[key] = _whole_hour_date(tz, key)
        if found is not None:
            return found
        instant = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
        return instant.astimezone(zone(tz)).date().isoformat()


def _whole_hour_date(tz: str, hour: str) -> str | None:
    """The one local date of every instant in the UTC hour ``hour``, or ``None`` if it has two."""
    first = datetime.fromisoformat(hour + ":00:00").replace(tzinfo=UTC)
    try:
        start = first.astimezone(zone(tz))
        end = (first + _HOUR).astimezone(zone(tz))
    except OverflowError:  # the first or last year datetime can hold
        return None
    if start.date() != end.date() or start.utcoffset() != end.utcoffset():
        return None
    return start.date().isoformat()


def stored_instant(value: datetime) -> str:
    """An aware instant as the stored naive-UTC text (microseconds always written)."""
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


#: ``(line, cells, problem)``: one source row as the CSV reader (or a JSON record) gives it.
Item = tuple[int, Sequence[Any], Any]


def clean_batch(
    batch: Sequence[Item],
    width: int | None,
    pick: Callable[[Sequence[Any]], Sequence[Any]],
    index: ReferenceIndex,
    days: LocalDays,
    rows: list[ReadingTuple],
    lines: list[int],
) -> list[Item]:
    """Append the stored tuple and line of every clean reading; return the other items.

    ``pick`` turns an item's cells into the eight reading cells (reading_id, patient_id,
    device_id, measured_at, type, value, unit, transmission); ``reading_id`` may be
    ``None`` (no such column). An item is clean when it has no problem, has ``width``
    cells (unless ``width`` is ``None``), every picked cell is text, and it passes the
    checks of ``rows.check_reading``: required cells present after trimming, lengths
    within the limits, a known transmission, a timestamp with a time of day and an
    offset, a device that belongs to the (accepted) patient, no character that cleaning
    would remove or refuse (``isprintable`` is false for every Cc and Cf character, so
    such rows, and rows with tabs or non-breaking spaces, take the full check), a local
    date not before the patient's birth and an instant not after ``index.not_after``.
    Stored instants and ISO dates compare as text in time order. One loop over a batch
    (rather than a call per row) keeps the per-row cost to the checks themselves.
    """
    rest: list[Item] = []
    zones = days.zones
    tz_of = index.patients.known.get
    owner_of = index.devices.known.get
    rejected_patients = index.patients.rejected
    rejected_devices = index.devices.rejected
    modes = TRANSMISSIONS
    fromiso = datetime.fromisoformat
    birth_of = index.births.get
    latest = NO_LATER_BOUND if index.not_after is None else stored_instant(index.not_after)
    for item in batch:
        line, cells, problem = item
        if problem is not None or (width is not None and len(cells) != width):
            rest.append(item)
            continue
        reading_id, patient, device, stamp, kind, value, unit, transmission = pick(cells)
        try:
            patient = patient.strip()
            device = device.strip()
            kind = kind.strip()
            value = value.strip()
            unit = unit.strip()
            stamp = stamp.strip()
            mode = modes.get(transmission.strip().lower())
            if reading_id is not None:
                reading_id = reading_id.strip() or None
        except AttributeError:  # not text (JSON numbers, null …): the full check says why
            rest.append(item)
            continue
        if (
            mode is None
            or not (0 < len(patient) <= ID_MAX and 0 < len(device) <= ID_MAX)
            or not (0 < len(kind) <= TYPE_MAX and 0 < len(unit) <= UNIT_MAX and 0 < len(value) <= VALUE_MAX)
            or (reading_id is not None and len(reading_id) > ID_MAX)
            or len(stamp) < 16
            or stamp[10] not in "Tt "
            or not (
                patient + device + stamp + kind + value + unit + transmission + (reading_id or "")
            ).isprintable()
        ):
            rest.append(item)
            continue
        tz = tz_of(patient)
        if (
            tz is None
            or owner_of(device) != patient
            or patient in rejected_patients
            or device in rejected_devices
        ):
            rest.append(item)
            continue
        try:
            parsed = fromiso(stamp)
        except ValueError:
            rest.append(item)
            continue
        if (
            len(stamp) == 20
            and stamp[19] in "Zz"
            and stamp[4] == "-"
            and stamp[7] == "-"
            and stamp[13] == ":"
            and stamp[16] == ":"
        ):
            # Already UTC to the second: the stored spellings are slices of the input.
            day, clock = stamp[:10], stamp[11:19]
            text = f"{day} {clock}.000000"
            key = reading_id or f"{device}|{day}T{clock}+00:00|{kind}"
        elif parsed.tzinfo is None or parsed.utcoffset() is None:
            rest.append(item)
            continue
        else:
            measured = parsed.astimezone(UTC)
            text = stored_instant(measured)
            key = reading_id or f"{device}|{measured.isoformat()}|{kind}"
        if text > latest:
            rest.append(item)
            continue
        hours = zones.get(tz)
        local = None if hours is None else hours.get(text[:13])
        if local is None:
            local = days.of(tz, text)
        birth = birth_of(patient)
        if birth is not None and local < birth:
            rest.append(item)
            continue
        rows.append((key, reading_id, patient, device, text, local, kind, value, unit, mode, NO_EXTRA))
        lines.append(line)
    return rest


def clean_reading(
    reading_id: str | None,
    patient: str,
    device: str,
    stamp: str,
    kind: str,
    value: str,
    unit: str,
    transmission: str,
    index: ReferenceIndex,
    days: LocalDays,
) -> ReadingTuple | None:
    """One reading through ``clean_batch``: its stored tuple, or ``None`` if not clean."""
    rows: list[ReadingTuple] = []
    cells = (reading_id, patient, device, stamp, kind, value, unit, transmission)
    clean_batch([(0, cells, None)], None, same, index, days, rows, [])
    return rows[0] if rows else None


def same(cells: Sequence[Any]) -> Sequence[Any]:
    """``pick`` for cells already in reading order."""
    return cells
