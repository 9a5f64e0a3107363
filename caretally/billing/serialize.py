"""Decisions as plain JSON-able dicts: one shape for explain, stored runs and the API."""

from __future__ import annotations

from typing import Any

from caretally.model import Decision, Evidence, Measures, Reason


def evidence_to_json(e: Evidence) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if e.dates:
        out["dates"] = [d.isoformat() for d in e.dates]
    if e.time_entry_ids:
        out["time_entry_ids"] = list(e.time_entry_ids)
    if e.interactive_entry_ids:
        out["interactive_entry_ids"] = list(e.interactive_entry_ids)
    if e.device_ids:
        out["device_ids"] = list(e.device_ids)
    if e.values:
        out["values"] = dict(e.values)
    return out


def reason_to_json(r: Reason) -> dict[str, Any]:
    return {
        "rule_id": r.rule_id,
        "passed": r.passed,
        "verdict": r.verdict.value,
        "kind": r.kind.value,
        "message": r.message,
        "citation": r.citation,
        "evidence": evidence_to_json(r.evidence),
    }


def decision_to_json(d: Decision) -> dict[str, Any]:
    return {
        "patient_id": d.patient_id,
        "enrollment_id": d.enrollment_id,
        "program": d.program.value,
        "code": d.code,
        "status": d.status.value,
        "units": d.units,
        "date_of_service": d.date_of_service.isoformat() if d.date_of_service else None,
        "period": {
            "kind": d.period.kind.value,
            "start": d.period.start.isoformat(),
            "end": d.period.end.isoformat(),
        },
        "billing_practitioner_id": d.billing_practitioner_id,
        "rendering_practitioner_id": d.rendering_practitioner_id,
        "expected_payment": None if d.expected_payment is None else str(d.expected_payment),
        "reasons": [reason_to_json(r) for r in d.reasons],
        "parameters": [
            {"name": p.name, "value": p.value, "layer": p.layer, "citation": p.citation} for p in d.parameters
        ],
        "documentation_gaps": list(d.documentation_gaps),
        "rule_year": d.rule_year,
        "provisional": d.provisional,
        "measures": measures_to_json(d.measures),
    }


def measures_to_json(m: Measures) -> dict[str, Any]:
    """Only the quantities the code counts (``None`` is left out)."""
    out: dict[str, Any] = {}
    for name in (
        "days",
        "min_days",
        "days_left",
        "minutes",
        "seconds",
        "min_minutes",
        "max_minutes",
        "next_unit_minutes",
    ):
        value = getattr(m, name)
        if value is not None:
            out[name] = value
    if m.interactive is not None:
        out["interactive"] = m.interactive
    # The counted entries and days are already in the reasons' evidence; stored once.
    return out
