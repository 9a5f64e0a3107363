"""Finding our device from a vendor's serial (``devices.hardware_id``) at a given instant.

A cellular cuff or a Tenovi sensor names itself by the vendor's serial, never by the
practice's device id; and a unit returned by one patient may later go to another. So a
serial alone does not say whose reading it is: the device whose assignment covers the
reading's date (on its patient's wall clock) does. This is a lookup that turns a vendor
record into a bundle record; the reading itself is then checked by the bundle pipeline.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Engine, and_, select

from caretally.dates import zone
from caretally.store import schema

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Assignment:
    device_id: str
    patient_id: str
    timezone: str
    assigned: date
    returned: date | None

    def covers(self, instant: datetime) -> bool:
        day = instant.astimezone(zone(self.timezone)).date()
        return self.assigned <= day and (self.returned is None or day <= self.returned)


@dataclass(frozen=True, slots=True)
class Found:
    """The device a serial meant at an instant, or why there is none (``code``, ``message``)."""

    assignment: Assignment | None
    code: str | None = None
    message: str | None = None


def assignments(engine: Engine, org_id: str, serials: Iterable[str]) -> dict[str, list[Assignment]]:
    """Every device of the organization carrying one of ``serials``, with its patient's zone."""
    wanted = sorted({s for s in serials if s})
    d, p = schema.devices, schema.patients
    found: dict[str, list[Assignment]] = defaultdict(list)
    with engine.connect() as conn:
        for start in range(0, len(wanted), _CHUNK):
            query = (
                select(
                    d.c.hardware_id,
                    d.c.device_id,
                    d.c.patient_id,
                    p.c.timezone,
                    d.c.assigned_date,
                    d.c.returned_date,
                )
                .join(p, and_(p.c.org_id == d.c.org_id, p.c.patient_id == d.c.patient_id))
                .where(d.c.org_id == org_id, d.c.hardware_id.in_(wanted[start : start + _CHUNK]))
                .order_by(d.c.assigned_date, d.c.device_id)
            )
            for serial, device, patient, tz, assigned, returned in conn.execute(query):
                found[serial].append(Assignment(device, patient, tz, assigned, returned))
    return dict(found)


def device_at(candidates: list[Assignment] | None, serial: str, instant: datetime) -> Found:
    """The one device carrying ``serial`` whose assignment covers ``instant``."""
    if not candidates:
        return Found(None, "unknown_device", f"no device has hardware_id {serial}")
    covering = [a for a in candidates if a.covers(instant)]
    if len(covering) == 1:
        return Found(covering[0])
    if covering:
        ids = ", ".join(a.device_id for a in covering)
        return Found(
            None,
            "ambiguous_device",
            f"hardware_id {serial} is assigned to more than one device on that date ({ids}); "
            "correct the assignment dates in devices",
        )
    spans = "; ".join(
        f"{a.device_id} from {a.assigned}" + (f" to {a.returned}" if a.returned else "") for a in candidates
    )
    return Found(
        None,
        "device_not_assigned",
        f"hardware_id {serial} is not assigned to a patient at {instant.isoformat()} ({spans})",
    )
