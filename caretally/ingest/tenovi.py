"""The Tenovi measurement webhook: a JSON array of device measurements, stored as readings.

Tenovi relays what its cellular gateways and direct-cellular devices send, so every
reading it posts is device-transmitted (``auto``). Each measurement names the unit by
``hwi_device_id``, which we look up in ``devices.hardware_id`` within the assignment
dates; the patient is the one that device was assigned to. The mapping, and what is
uncertain about Tenovi's documentation, is written down in docs/formats.md ("Tenovi").

Authentication: Tenovi's docs describe no signature, only an optional header that the
client configures per webhook in Tenovi's web app (a header name and a key Tenovi sends
with every POST). ``verify_tenovi`` compares that header with the organization's shared
secret in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Engine

from caretally.dates import zone
from caretally.errors import Problem
from caretally.ingest import hardware
from caretally.ingest.live import ItemOutcome, LiveResult, Locator, pointer, problem, run_records
from caretally.ingest.pipeline import DEFAULT_CLOCK_SKEW

KIND = "tenovi"
#: The header Tenovi is configured to send the shared secret in, unless the caller says otherwise.
DEFAULT_HEADER = "Authorization"


@dataclass(frozen=True, slots=True)
class Metric:
    type: str
    unit: str
    two_values: bool = False


#: Tenovi metric (matched case-insensitively) → our reading type and unit.
METRICS: dict[str, Metric] = {
    "blood_pressure": Metric("blood_pressure", "mmHg", two_values=True),
    "pulse": Metric("heart_rate", "bpm"),
    "weight": Metric("weight", "lbs"),
    "glucose": Metric("glucose", "mg/dL"),
    "spo2": Metric("spo2", "%"),
}
#: Documented metrics that are not a physiologic measurement we store: skipped with a
#: warning (battery level, activity, the irregular-heartbeat flag sent beside a blood
#: pressure, pillbox events, the pulse oximeter's perfusion index).
NOT_STORED: frozenset[str] = frozenset(
    {
        "battery_percentage",
        "steps",
        "sleep",
        "heart_rate_statistics",
        "irregular_heartbeat",
        "pillbox_opened",
        "pillbox_refilled",
        "pillbox_refill_initiated",
        "perfusion_index",
    }
)
_FIELDS = {
    "patient_id": "/hwi_device_id",
    "device_id": "/hwi_device_id",
    "measured_at": "/timestamp",
    "type": "/metric",
    "value": "/value_1",
    "unit": "/metric",
    "transmission": "",
}


def verify_tenovi(
    headers: Mapping[str, str], body: bytes, secret: str, *, header: str = DEFAULT_HEADER
) -> bool:
    """True when the request carries the organization's shared secret in ``header``.

    Header names compare case-insensitively; the value must equal ``secret`` exactly
    (compared in constant time). An empty secret never verifies. ``body`` is accepted so
    a signature can be checked here should Tenovi add one; today it is not read.
    """
    if not secret:
        return False
    wanted = header.lower()
    sent = next((value for name, value in headers.items() if name.lower() == wanted), None)
    if sent is None:
        return False
    return hmac.compare_digest(sent.encode("utf-8"), secret.encode("utf-8"))


class _Refused(Exception):
    def __init__(self, field: str, code: str, message: str):
        super().__init__(message)
        self.field = field
        self.code = code
        self.message = message


def offset_of(value: Any) -> timedelta:
    """``timezone_offset`` as a duration. UNCERTAIN: Tenovi does not document its unit.

    A magnitude up to 14 is read as hours (fractions allowed: 5.5), up to 840 as minutes,
    up to 50,400 as seconds; no real zone is more than 14 hours from UTC, so the three
    readings never overlap (0 is 0 in all of them).
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not an offset")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    size = abs(amount)
    if size <= 14:
        result = timedelta(hours=float(amount))
    elif size <= 840:
        result = timedelta(minutes=float(amount))
    elif size <= 50_400:
        result = timedelta(seconds=float(amount))
    else:
        raise ValueError(f"{value!r} is more than 14 hours from UTC in any unit")
    if result % timedelta(minutes=15):
        raise ValueError(f"{value!r} is not a whole quarter hour from UTC")
    return result


def instant_of(stamp: Any, offset: timedelta | None) -> datetime:
    """The measurement's instant: ``timestamp`` with its own offset, or at ``timezone_offset``."""
    if not isinstance(stamp, str) or not stamp.strip():
        raise _Refused("timestamp", "required", "timestamp is required")
    text = stamp.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        raise _Refused("timestamp", "bad_timestamp", f"{stamp!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is not None and parsed.utcoffset() is not None:
        return parsed
    if offset is None:
        raise _Refused(
            "timestamp",
            "naive_timestamp",
            f"timestamp {stamp!r} has no UTC offset and the measurement has no timezone_offset",
        )
    return parsed.replace(tzinfo=timezone(offset))


def _number(value: Any, name: str) -> Decimal:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _Refused(name, "required", f"{name} is required")
    if isinstance(value, bool):
        raise _Refused(name, "bad_value", f"{name} must be a number, got {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise _Refused(name, "bad_value", f"{name} must be a number, got {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise _Refused(name, "bad_value", f"{name} must be greater than 0, got {value!r}")
    return amount


def _text(amount: Decimal) -> str:
    return format(amount.normalize(), "f")


def ingest_tenovi(
    engine: Engine,
    org_id: str,
    payload: Any,
    *,
    partial: bool = False,
    now: datetime,
    actor: str | None = None,
    max_clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> LiveResult:
    """Store the readings of one Tenovi measurement webhook (a JSON array, or one object).

    Tenovi posts one object per measurement unless the webhook is set to "post as
    array"; both shapes are accepted. The request does not carry its own ids, so each
    reading is keyed by device, instant and type: a re-sent webhook is ``unchanged``.
    """
    items = [payload] if isinstance(payload, Mapping) else payload
    if not isinstance(items, list):
        return LiveResult(
            KIND, False, None, problems=[problem(KIND, "", "bad_json", "the body must be a JSON array")]
        )
    serials = {
        item.get("hwi_device_id").strip()
        for item in items
        if isinstance(item, Mapping) and isinstance(item.get("hwi_device_id"), str)
    }
    devices = hardware.assignments(engine, org_id, serials)
    records: list[dict[str, Any]] = []
    locators: list[Locator] = []
    early: list[tuple[str, Problem]] = []
    ignored: list[ItemOutcome] = []
    warnings: list[Problem] = []
    for i, item in enumerate(items):
        where = pointer(i)
        if not isinstance(item, Mapping):
            message = f"expected a JSON object, got {type(item).__name__}"
            early.append((where, problem(KIND, where, "bad_record", message)))
            continue
        metric_name = item.get("metric")
        name = metric_name.strip().lower() if isinstance(metric_name, str) else ""
        if name in NOT_STORED:
            ignored.append(ItemOutcome(where, "ignored"))
            message = f"metric {metric_name} is not a physiologic reading caretally stores; skipped"
            warnings.append(problem(KIND, where + "/metric", "ignored_metric", message, "metric"))
            continue
        try:
            record, notes = _record(item, name, devices)
        except _Refused as refused:
            early.append((where, problem(KIND, f"{where}/{refused.field}", refused.code, refused.message)))
            continue
        warnings.extend(problem(KIND, f"{where}/{f}", c, m, f) for f, c, m in notes)
        records.append(record)
        locators.append(Locator(where, _FIELDS))
    if not items:
        return LiveResult(KIND, True, None)
    return run_records(
        engine,
        org_id,
        KIND,
        "readings",
        records,
        locators,
        partial=partial,
        now=now,
        early=early,
        ignored=ignored,
        warnings=warnings,
        actor=actor,
        max_clock_skew=max_clock_skew,
    )


def _record(
    item: Mapping[str, Any], name: str, devices: Mapping[str, list[hardware.Assignment]]
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """The readings record of one measurement, and the warnings it deserves."""
    if not name:
        raise _Refused("metric", "required", "metric is required")
    metric = METRICS.get(name)
    if metric is None:
        known = ", ".join(sorted(METRICS))
        raise _Refused(
            "metric",
            "unknown_metric",
            f"metric {item.get('metric')!r} is not one caretally maps to a reading ({known}); not guessed",
        )
    value = _text(_number(item.get("value_1"), "value_1"))
    if metric.two_values:
        value = f"{value}/{_text(_number(item.get('value_2'), 'value_2'))}"
    raw_offset = item.get("timezone_offset")
    offset: timedelta | None = None
    if raw_offset is not None and not (isinstance(raw_offset, str) and not raw_offset.strip()):
        try:
            offset = offset_of(raw_offset)
        except ValueError as exc:
            raise _Refused("timezone_offset", "bad_offset", f"timezone_offset: {exc}") from None
    instant = instant_of(item.get("timestamp"), offset)
    serial = item.get("hwi_device_id")
    if not isinstance(serial, str) or not serial.strip():
        raise _Refused("hwi_device_id", "required", "hwi_device_id is required")
    found = hardware.device_at(devices.get(serial.strip()), serial.strip(), instant)
    if found.assignment is None:
        raise _Refused("hwi_device_id", found.code or "unknown_device", found.message or "")
    device = found.assignment
    notes: list[tuple[str, str, str]] = []
    if item.get("estimated_timestamp") is True:
        notes.append(
            (
                "estimated_timestamp",
                "estimated_timestamp",
                "Tenovi estimated this time (the device clock was reset); its day may be wrong",
            )
        )
    local = instant.astimezone(zone(device.timezone)).utcoffset()
    if offset is not None and local is not None and local != offset:
        notes.append(
            (
                "timezone_offset",
                "offset_mismatch",
                f"the device reports UTC{_hours(offset)} but the patient's zone {device.timezone} is at "
                f"UTC{_hours(local)} then; the local date follows the patient's zone",
            )
        )
    sent_patient = item.get("patient_id")
    if isinstance(sent_patient, str) and sent_patient.strip() and sent_patient.strip() != device.patient_id:
        notes.append(
            (
                "patient_id",
                "patient_id_differs",
                f"Tenovi's patient_id differs from the patient device {device.device_id} is assigned to; "
                "the assignment decides",
            )
        )
    record: dict[str, Any] = {
        "patient_id": device.patient_id,
        "device_id": device.device_id,
        "measured_at": instant.astimezone(UTC),
        "type": metric.type,
        "value": value,
        "unit": metric.unit,
        "transmission": "auto",
        "source": "tenovi",
        "hwi_device_id": serial.strip(),
    }
    if item.get("estimated_timestamp") is True:
        record["estimated_timestamp"] = True
    return record, notes


def _hours(offset: timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
