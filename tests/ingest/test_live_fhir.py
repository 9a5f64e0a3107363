"""FHIR R4 Bundles of vital-sign Observations, built with fhir.resources, stored as readings."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntryRequest
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.observation import Observation, ObservationComponent
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.reference import Reference

from caretally.billing.evaluate import evaluate_month
from caretally.billing.payers import PayerRules
from caretally.dates import parse_month
from caretally.ingest.fhir import HARDWARE_SYSTEM, PATIENT_SYSTEM, ingest_fhir_bundle
from tests.ingest.live_practice import CUFF, NOW, SCALE_IMEI, audit_rows, open_practice, stored_readings

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def concept(code: str) -> CodeableConcept:
    return CodeableConcept(coding=[Coding(system=LOINC, code=code)])


def quantity(value: str, unit: str, code: str | None = None) -> Quantity:
    return Quantity(value=Decimal(value), unit=unit, system=UCUM, code=code or unit)


def observation(
    oid: str,
    code: str,
    *,
    value: Quantity | None = None,
    when: str = "2026-03-05T08:00:00-06:00",
    patient: str = "P1",
    device: Reference | None = None,
    status: str = "final",
    components: list[ObservationComponent] | None = None,
) -> Observation:
    return Observation(
        id=oid,
        identifier=[Identifier(system="urn:example:ehr-obs", value=f"ehr-{oid}")],
        status=status,
        category=[
            CodeableConcept(
                coding=[
                    Coding(
                        system="http://terminology.hl7.org/CodeSystem/observation-category",
                        code="vital-signs",
                    )
                ]
            )
        ],
        code=concept(code),
        subject=Reference(identifier=Identifier(system=PATIENT_SYSTEM, value=patient)),
        effectiveDateTime=when,
        valueQuantity=value,
        device=device,
        component=components,
    )


def blood_pressure(oid: str, systolic: str = "128", diastolic: str = "82", **kw: Any) -> Observation:
    parts = [
        ObservationComponent(code=concept("8480-6"), valueQuantity=quantity(systolic, "mmHg", "mm[Hg]")),
        ObservationComponent(code=concept("8462-4"), valueQuantity=quantity(diastolic, "mmHg", "mm[Hg]")),
    ]
    return observation(oid, "85354-9", components=parts, **kw)


def by_serial(serial: str) -> Reference:
    return Reference(identifier=Identifier(system=HARDWARE_SYSTEM, value=serial))


def bundle(*resources: Any, kind: str = "transaction") -> dict[str, Any]:
    entries = [
        BundleEntry(
            fullUrl=f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
            resource=r,
            request=BundleEntryRequest(method="POST", url=r.get_resource_type()),
        )
        for n, r in enumerate(resources)
    ]
    built = Bundle(type=kind, entry=entries)
    return json.loads(built.model_dump_json())


def test_every_mapped_vital_sign_becomes_a_reading(db_url: str) -> None:
    engine = open_practice(db_url)
    sent = bundle(
        blood_pressure("bp1", device=by_serial(CUFF)),
        observation("w1", "29463-7", value=quantity("82.50", "kg"), device=by_serial(SCALE_IMEI)),
        observation("w2", "29463-7", value=quantity("181.9", "lb", "[lb_av]"), device=by_serial(SCALE_IMEI)),
        observation("g1", "2339-0", value=quantity("104", "mg/dL")),
        observation("g2", "41653-7", value=quantity("131", "mg/dL")),
        observation("s1", "59408-5", value=quantity("97", "%")),
        observation("s2", "2708-6", value=quantity("95", "%")),
        observation("h1", "8867-4", value=quantity("72", "beats/minute", "/min")),
    )
    result = ingest_fhir_bundle(engine, "clinic", sent, now=NOW)
    assert result.ok(), result.problems
    assert [i.status for i in result.items] == ["inserted"] * 8
    rows = {r["reading_id"]: r for r in stored_readings(engine)}
    got = {k: (r["type"], r["value"], r["unit"], r["device_id"], r["transmission"]) for k, r in rows.items()}
    assert got == {
        "ehr-bp1": ("blood_pressure", "128/82", "mmHg", "D1", "auto"),
        "ehr-w1": ("weight", "82.5", "kg", "D2", "auto"),
        "ehr-w2": ("weight", "181.9", "lbs", "D2", "auto"),
        "ehr-g1": ("glucose", "104", "mg/dL", None, "manual"),
        "ehr-g2": ("glucose", "131", "mg/dL", None, "manual"),
        "ehr-s1": ("spo2", "97", "%", None, "manual"),
        "ehr-s2": ("spo2", "95", "%", None, "manual"),
        "ehr-h1": ("heart_rate", "72", "bpm", None, "manual"),
    }
    assert rows["ehr-bp1"]["extra"] == {"loinc": "85354-9", "source": "fhir"}
    assert rows["ehr-bp1"]["local_date"] == date(2026, 3, 5)
    assert result.touched == {("P1", "2026-03")}


def test_problems_point_into_the_bundle(db_url: str) -> None:
    engine = open_practice(db_url)
    no_diastolic = blood_pressure("bp2")
    no_diastolic.component = no_diastolic.component[:1]
    sent = bundle(
        observation("ok", "29463-7", value=quantity("82", "kg")),
        observation("u1", "8310-5", value=quantity("37", "Cel")),
        observation("p1", "29463-7", value=quantity("82", "kg"), status="preliminary"),
        observation("n1", "29463-7", value=quantity("82", "kg")),
        observation("m1", "2339-0"),
        observation("x1", "2339-0", value=quantity("5.8", "mmol/L")),
        no_diastolic,
        observation("c1", "29463-7", value=quantity("82", "kg"), status="cancelled"),
        observation("f1", "29463-7", value=quantity("82", "kg"), device=by_serial("NO-SUCH-SERIAL")),
    )
    # fhir.resources will not even build a time of day without an offset: write it into the JSON.
    sent["entry"][3]["resource"]["effectiveDateTime"] = "2026-03-05T08:00:00"
    result = ingest_fhir_bundle(engine, "clinic", sent, now=NOW)
    assert not result.stored and stored_readings(engine) == []
    assert [(p.pointer, p.code) for p in result.problems] == [
        ("/entry/1/resource/code", "unknown_code"),
        ("/entry/2/resource/status", "not_final"),
        ("/entry/3/resource/effectiveDateTime", "naive_timestamp"),
        ("/entry/4/resource/valueQuantity", "missing_value"),
        ("/entry/5/resource/valueQuantity", "wrong_unit"),
        ("/entry/6/resource/component", "missing_component"),
        ("/entry/7/resource/status", "not_final"),
        ("/entry/8/resource/device", "unknown_device"),
    ]
    assert [i.status for i in result.items] == ["not_stored"] + ["rejected"] * 8
    partial = ingest_fhir_bundle(engine, "clinic", sent, partial=True, now=NOW)
    assert partial.stored and [r["reading_id"] for r in stored_readings(engine)] == ["ehr-ok"]


def test_the_pipelines_own_checks_point_at_the_observation_too(db_url: str) -> None:
    engine = open_practice(db_url)
    future = observation("late", "29463-7", value=quantity("82", "kg"), when="2026-05-01T08:00:00-05:00")
    stranger = observation("who", "29463-7", value=quantity("82", "kg"), patient="P404")
    wrong_owner = observation(
        "own", "29463-7", value=quantity("82", "kg"), device=by_serial(CUFF), when="2026-03-25T08:00:00-10:00"
    )
    result = ingest_fhir_bundle(engine, "clinic", bundle(future, stranger, wrong_owner), now=NOW)
    assert [(p.pointer, p.code) for p in result.problems] == [
        ("/entry/0/resource/effectiveDateTime", "future_reading"),
        ("/entry/1/resource/subject", "unknown_patient"),
        ("/entry/2/resource/device", "device_patient_mismatch"),
    ]


def test_patient_and_device_entries_resolve_references(db_url: str) -> None:
    engine = open_practice(db_url)
    patient = Patient(
        id="pat",
        identifier=[
            Identifier(system="urn:other:mrn", value="MRN-9"),
            Identifier(system=PATIENT_SYSTEM, value="P1"),
        ],
    )
    cuff = Device(id="dev", serialNumber=CUFF, identifier=[Identifier(system="urn:other:asset", value="A-1")])
    obs = blood_pressure("bp3")
    obs.subject = Reference(reference="urn:uuid:00000000-0000-4000-8000-000000000000")
    obs.device = Reference(reference="Device/dev")
    dangling = observation("d1", "29463-7", value=quantity("82", "kg"))
    dangling.subject = Reference(reference="Patient/elsewhere")
    result = ingest_fhir_bundle(engine, "clinic", bundle(patient, cuff, obs, dangling), partial=True, now=NOW)
    assert [(i.pointer, i.status) for i in result.items] == [
        ("/entry/0", "ignored"),
        ("/entry/1", "ignored"),
        ("/entry/2", "inserted"),
        ("/entry/3", "rejected"),
    ]
    assert [(p.pointer, p.code) for p in result.problems] == [
        ("/entry/3/resource/subject", "unresolved_reference")
    ]
    [row] = stored_readings(engine)
    assert (row["patient_id"], row["device_id"], row["value"]) == ("P1", "D1", "128/82")


def test_a_foreign_identifier_system_is_not_guessed(db_url: str) -> None:
    engine = open_practice(db_url)
    obs = observation("i1", "29463-7", value=quantity("82", "kg"))
    obs.subject = Reference(identifier=Identifier(system="urn:other:mrn", value="P1"))
    result = ingest_fhir_bundle(engine, "clinic", bundle(obs), now=NOW)
    assert [(p.pointer, p.code) for p in result.problems] == [
        ("/entry/0/resource/subject/identifier/system", "unknown_identifier_system")
    ]


def test_amended_updates_and_entered_in_error_retracts_with_audit(db_url: str) -> None:
    engine = open_practice(db_url)
    first = ingest_fhir_bundle(
        engine, "clinic", bundle(blood_pressure("bp4", device=by_serial(CUFF))), now=NOW
    )
    assert [i.status for i in first.items] == ["inserted"]
    amended = blood_pressure("bp4", systolic="126", device=by_serial(CUFF), status="amended")
    second = ingest_fhir_bundle(engine, "clinic", bundle(amended), now=NOW, actor="token:ehr")
    assert [i.status for i in second.items] == ["updated"]
    assert [r["value"] for r in stored_readings(engine)] == ["126/82"]
    withdrawn = blood_pressure("bp4", systolic="126", device=by_serial(CUFF), status="entered-in-error")
    third = ingest_fhir_bundle(engine, "clinic", bundle(withdrawn), now=NOW, actor="token:ehr")
    assert [(i.pointer, i.status, i.key) for i in third.items] == [("/entry/0", "retracted", "ehr-bp4")]
    assert stored_readings(engine) == [] and third.touched == {("P1", "2026-03")}
    update, retraction = audit_rows(engine, "readings")
    assert update["actor"] == "token:ehr" and update["new_values"] == {"value": "126/82"}
    assert retraction["new_values"] == {
        "retraction_reason": "FHIR Observation ehr-bp4 was marked entered-in-error"
    }
    again = ingest_fhir_bundle(engine, "clinic", bundle(withdrawn), now=NOW)
    assert [i.status for i in again.items] == ["ignored"]
    assert [(w.pointer, w.code) for w in again.warnings] == [
        ("/entry/0/resource/status", "nothing_to_retract")
    ]


def test_the_bundle_itself_is_checked(db_url: str) -> None:
    engine = open_practice(db_url)
    searchset = bundle(observation("o", "29463-7", value=quantity("82", "kg")), kind="searchset")
    assert [
        (p.pointer, p.code) for p in ingest_fhir_bundle(engine, "clinic", searchset, now=NOW).problems
    ] == [("/type", "bad_enum")]
    not_bundle = ingest_fhir_bundle(engine, "clinic", {"resourceType": "Observation"}, now=NOW)
    assert [(p.pointer, p.code) for p in not_bundle.problems] == [("/resourceType", "not_a_bundle")]
    broken = bundle(observation("o", "29463-7", value=quantity("82", "kg")))
    broken["entry"][0]["resource"]["valueQuantity"]["value"] = "lots"
    broken["entry"].append({"resource": {"resourceType": "Condition", "id": "c"}})
    result = ingest_fhir_bundle(engine, "clinic", json.dumps(broken), now=NOW)
    assert [(p.pointer, p.code) for p in result.problems] == [
        ("/entry/0/resource/valueQuantity/value", "invalid_fhir"),
        ("/entry/1/resource/resourceType", "unsupported_resource"),
    ]


def test_a_device_observation_counts_as_a_device_day_a_manual_one_never_does(db_url: str) -> None:
    engine = open_practice(db_url)
    sent = bundle(
        observation(
            "dev",
            "29463-7",
            value=quantity("82", "kg"),
            device=by_serial(SCALE_IMEI),
            when="2026-03-05T08:00:00-06:00",
        ),
        observation("man", "29463-7", value=quantity("82", "kg"), when="2026-03-06T08:00:00-06:00"),
    )
    assert ingest_fhir_bundle(engine, "clinic", sent, now=NOW).ok()
    # E1 starts 2026-02-01: the 30-day period 2026-03-03..04-01 has its date of service in April.
    [(facts, decisions)] = [
        (f, d)
        for f, d in evaluate_month(engine, "clinic", parse_month("2026-04"), PayerRules.load())
        if f.patient_id == "P1"
    ]
    [program] = facts.programs
    march = {day for day in program.data_days if day.month == 3}
    assert march == {date(2026, 3, 5)}
    assert all(date(2026, 3, 6) not in days for days in program.excluded_days.values())
    supply = [d for d in decisions if d.code in ("99445", "99454") and d.period.start == date(2026, 3, 3)]
    assert supply and all(d.measures.dates == (date(2026, 3, 5),) for d in supply)


def test_a_withdrawal_a_locked_run_may_have_used_is_refused(db_url: str) -> None:
    from datetime import UTC, datetime

    from caretally.billing.run import bill_month, lock_month

    engine = open_practice(db_url)
    sent = bundle(blood_pressure("bp5", device=by_serial(CUFF), when="2026-03-02T08:00:00-06:00"))
    assert ingest_fhir_bundle(engine, "clinic", sent, now=NOW).ok()
    bill_month(
        engine,
        "clinic",
        parse_month("2026-03"),
        PayerRules.load(),
        now=lambda: datetime(2026, 4, 2, tzinfo=UTC),
    )
    run_id = lock_month(engine, "clinic", "2026-03").run_id
    withdrawn = bundle(
        blood_pressure(
            "bp5", device=by_serial(CUFF), when="2026-03-02T08:00:00-06:00", status="entered-in-error"
        )
    )
    result = ingest_fhir_bundle(engine, "clinic", withdrawn, now=NOW)
    assert not result.stored
    [problem] = result.problems
    assert (problem.pointer, problem.code) == ("/entry/0/resource/identifier/0/value", "retraction_locked")
    assert run_id in problem.message
    assert [r["reading_id"] for r in stored_readings(engine)] == ["ehr-bp5"]
