"""Properties: local dates through the ingest path, the readings fast path, identifiers."""

from __future__ import annotations

import itertools
import tempfile
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from caretally.ingest import import_records
from caretally.ingest.references import ReferenceIndex
from caretally.ingest.rows import FILES, check_row, fast_reading
from caretally.ingest.values import (
    FieldError,
    _icd10,
    dotted_icd10,
    icd10_billable,
    instant,
    is_valid_mbi,
    is_valid_npi,
)
from caretally.store import schema
from caretally.store.db import open_database
from tests.ingest.bundles import DR_NPI, MBI, NP_NPI, npi_with_check_digit

ZONES = (
    "Pacific/Honolulu",
    "America/Phoenix",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Anchorage",
    "America/Puerto_Rico",
    "Pacific/Guam",
)
ORG = "clinic"
_serial = itertools.count()

wall_clocks = st.datetimes(
    min_value=datetime(1995, 1, 1),
    max_value=datetime(2040, 12, 31),
    timezones=st.sampled_from([ZoneInfo(z) for z in ZONES]),
    allow_imaginary=False,
)
# The offset the source happened to write the instant in: any whole quarter hour.
offsets = st.integers(min_value=-14 * 4, max_value=14 * 4).map(lambda q: timezone(timedelta(minutes=15 * q)))


@pytest.fixture(scope="module")
def practice() -> object:
    folder = Path(tempfile.mkdtemp(prefix="ct-localdate-"))
    engine = open_database(f"sqlite:///{folder / 'local.db'}", ORG)
    bundle = {
        "practitioners": [{"practitioner_id": "RN1", "name": "Cy Park", "credential": "RN"}],
        "patients": [
            {
                "patient_id": f"P-{z}",
                "birth_date": "1950-01-01",
                "timezone": z,
                "payer": "commercial",
                "family_name": "Doe",
                "given_name": "Sam",
                "sex": "U",
            }
            for z in ZONES
        ],
        "devices": [
            {
                "device_id": f"D-{z}",
                "patient_id": f"P-{z}",
                "program": "RPM",
                "kind": "weight",
                "medical_device": "true",
                "assigned_date": "1995-01-01",
            }
            for z in ZONES
        ],
    }
    assert import_records(engine, ORG, bundle).ok()
    return engine


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moments=st.lists(st.tuples(wall_clocks, offsets), min_size=1, max_size=8))
def test_local_date_is_the_patients_wall_clock_date(practice: object, moments: list) -> None:
    readings, entries, expected = [], [], {}
    for wall, offset in moments:
        zone_name = str(wall.tzinfo)
        written = wall.astimezone(offset).isoformat()  # same instant, another offset's spelling
        ident = f"X{next(_serial)}"
        expected[ident] = wall.date()
        readings.append(
            {
                "reading_id": ident,
                "patient_id": f"P-{zone_name}",
                "device_id": f"D-{zone_name}",
                "measured_at": written,
                "type": "weight",
                "value": "180",
                "unit": "lb",
                "transmission": "auto",
            }
        )
        entries.append(
            {
                "entry_id": ident,
                "patient_id": f"P-{zone_name}",
                "practitioner_id": "RN1",
                "started_at": written,
                "seconds": 60,
                "activity": "review",
                "interactive": False,
            }
        )
    # The generated instants run to 2040: judge them by a clock later than all of them.
    late_clock = datetime(2041, 1, 1, tzinfo=UTC)
    report = import_records(practice, ORG, {"readings": readings, "time_entries": entries}, now=late_clock)  # type: ignore[arg-type]
    assert report.ok(), report.problems
    r, t = schema.readings, schema.time_entries
    with practice.connect() as conn:  # type: ignore[attr-defined]
        got_r = dict(
            conn.execute(select(r.c.reading_id, r.c.local_date).where(r.c.reading_id.in_(expected))).all()
        )
        got_t = dict(
            conn.execute(select(t.c.entry_id, t.c.local_date).where(t.c.entry_id.in_(expected))).all()
        )
    assert got_r == expected
    assert got_t == expected


# --- the readings fast path must agree with the full check ------------------------------


#: P1 is born on a day the generated instants straddle (in Chicago), and the clock bound
#: is one of the generated instants, so both plausibility limits are hit on both sides.
NOT_AFTER = datetime(2026, 11, 1, 6, 30, 0, 250000, tzinfo=UTC)


def _index() -> ReferenceIndex:
    index = ReferenceIndex()
    index.patients.known.update({"P1": "America/Chicago", "P2": "Pacific/Guam"})
    index.births.update({"P1": "2026-03-08", "P2": "1950-01-01"})
    index.devices.known.update({"D1": "P1", "D2": "P2"})
    index.patients.reject("P3", "patients.csv:9")
    index.not_after, index.clock_skew_text = NOT_AFTER, "24 h"
    return index


cells = {
    "reading_id": st.sampled_from(["", " ", "R-1", "R" * 65]),
    "patient_id": st.sampled_from(["P1", " P1 ", "P2", "P3", "P9", "", "P1\u200b", "\u202eP2", "P\x002"]),
    "device_id": st.sampled_from(["D1", "D2", "D1 ", "D9", "", "D\u20661", "D1\x7f"]),
    "measured_at": st.one_of(
        st.sampled_from(
            [
                "2026-03-08T08:30:00Z",
                "2026-03-08T05:59:59Z",
                "2026-03-08T06:00:00Z",
                "2026-11-01T06:30:00.250001Z",
                "2026-03-08 02:30:00-06:00",
                "2026-03-08T02:30:00",
                "2026-03-08",
                "2026-02-30T00:00:00Z",
                "20260308T083000Z",
                " 2026-11-01T06:30:00.25+00:00 ",
                "2026-03-08t08:30:00+05:45",
                "garbage-garbage-x",
            ]
        ),
        st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    ),
    "type": st.sampled_from(["weight", " weight", "", "t" * 65, "wei\tght", "\u00adweight"]),
    "value": st.sampled_from(["180", "", " 128/82 ", "9" * 64, "9" * 65, "1\x0080", "\u200b", "18\u00a00"]),
    "unit": st.sampled_from(["lb", "", "u" * 33, "°F", "lb\ufeff"]),
    "transmission": st.sampled_from(["auto", "MANUAL", " Auto ", "fax", ""]),
}


@settings(max_examples=400, deadline=None)
@given(raw=st.fixed_dictionaries(cells), keyed=st.booleans(), stray=st.booleans())
def test_fast_path_agrees_with_full_check(raw: dict, keyed: bool, stray: bool) -> None:
    if stray:
        raw["comment"] = "x"
    if stray and not keyed:
        return  # a CSV with a stray reading column is refused by the header check instead
    spec = FILES["readings"]
    fast = fast_reading(raw, _index(), keyed=keyed)
    full = check_row(spec, raw, _index(), date(2026, 11, 27), keyed=keyed)
    if fast is not None:
        assert full.faults == []
        assert fast == {name: full.values.get(name) for name in spec.stored}


def test_fast_path_takes_the_ordinary_row() -> None:
    raw = {
        "reading_id": "",
        "patient_id": "P1",
        "device_id": "D1",
        "measured_at": "2026-03-08T08:30:00Z",
        "type": "weight",
        "value": "180",
        "unit": "lb",
        "transmission": "auto",
    }
    values = fast_reading(raw, _index(), keyed=False)
    assert values is not None and values["local_date"] == date(2026, 3, 8)


# --- identifiers --------------------------------------------------------------------------


@pytest.mark.parametrize("mbi", [MBI, "1EG4TE5MK73", "1eg4-te5-mk73", "9AA0AA0AA00", "1A00A00AA00"])
def test_valid_mbis(mbi: str) -> None:
    assert is_valid_mbi(mbi)


@pytest.mark.parametrize(
    "mbi",
    [
        "",
        "1EG4TE5MK7",
        "1EG4TE5MK733",
        "0EG4TE5MK73",
        "1SG4TE5MK73",
        "1EL4TE5MK73",
        "11G4TE5MK73",
        "1EGATE5MK73",
        "1EG4TE5MK7O",
        "1EG4 TE5 MK73",
        "1EG4-TE5-MK7Z",
    ],
)
def test_invalid_mbis(mbi: str) -> None:
    assert not is_valid_mbi(mbi)


def test_npi_check_digit() -> None:
    assert is_valid_npi(DR_NPI) and is_valid_npi(NP_NPI)
    assert not is_valid_npi("1234567890") and not is_valid_npi("123456789") and not is_valid_npi("12345678a3")
    for stem in ("100000000", "293847561", "987654321"):
        good = npi_with_check_digit(stem)
        wrong = {stem + d for d in "0123456789"} - {good}
        assert is_valid_npi(good) and not any(is_valid_npi(w) for w in wrong)


@pytest.mark.parametrize(
    ("given", "stored"), [("e119", "E11.9"), ("I10", "I10"), (" n18.30 ", "N18.30"), ("M5450", "M54.50")]
)
def test_icd10_normalised_with_the_dot(given: str, stored: str) -> None:
    assert icd10_billable(given) == stored


def test_icd10_dot_is_placed_as_the_library_places_it_for_every_billable_code() -> None:
    icd = _icd10()
    pairs = zip(icd.get_all_codes(with_dots=True), icd.get_all_codes(with_dots=False), strict=True)
    # A range ("C00-C96") is a block, never a code: the lookup refuses it before the dot.
    billable = [(dotted, bare) for dotted, bare in pairs if "-" not in bare and icd.is_leaf(dotted)]
    assert len(billable) > 70_000
    assert [dotted_icd10(bare) for _, bare in billable] == [dotted for dotted, _ in billable]


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ("E11", "icd10_not_billable"),
        ("I50.2", "icd10_not_billable"),
        ("E08-E13", "bad_icd10"),
        ("XYZ", "bad_icd10"),
        ("", "bad_icd10"),
    ],
)
def test_icd10_refusals(given: str, code: str) -> None:
    with pytest.raises(FieldError) as caught:
        icd10_billable(given)
    assert caught.value.code == code


def test_instant_parsing() -> None:
    assert instant("2026-03-08T02:30:00-06:00") == datetime(2026, 3, 8, 8, 30, tzinfo=UTC)
    assert instant("2026-03-08T08:30:00Z").tzinfo is UTC
    for bad, code in (
        ("2026-03-08T08:30:00", "naive_timestamp"),
        ("2026-03-08", "bad_timestamp"),
        ("2026-03-08T25:00:00Z", "bad_timestamp"),
    ):
        with pytest.raises(FieldError) as caught:
            instant(bad)
        assert caught.value.code == code
