"""Decisions as plain JSON-able dicts: one shape for explain, stored runs and the API.

A month run stores each patient's decisions in a compact form (:func:`stored_text`): the
decisions of one patient repeat the same citations, rule values and common checks many
times over (an enrollment's consent check is the same sentence for every one of its
codes), so the row keeps one table of each and the decisions point into them. Readers
never see that form: :func:`stored_decisions_json` turns a stored row — compact, or the
plain list rows written before it existed — back into exactly the dicts
:func:`decision_to_json` makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from caretally.model import Decision, Evidence, Measures, ParameterUse, Reason


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


def parameter_to_json(p: ParameterUse) -> dict[str, Any]:
    return {"name": p.name, "value": p.value, "layer": p.layer, "citation": p.citation}


def decision_to_json(d: Decision) -> dict[str, Any]:
    out = _decision_head(d)
    out["reasons"] = [reason_to_json(r) for r in d.reasons]
    out["parameters"] = [parameter_to_json(p) for p in d.parameters]
    _decision_tail(d, out)
    return out


def _decision_head(d: Decision) -> dict[str, Any]:
    return {
        "patient_id": d.patient_id,
        "enrollment_id": d.enrollment_id,
        "program": str(d.program),
        "code": d.code,
        "status": str(d.status),
        "units": d.units,
        "date_of_service": d.date_of_service.isoformat() if d.date_of_service else None,
        "period": {
            "kind": str(d.period.kind),
            "start": d.period.start.isoformat(),
            "end": d.period.end.isoformat(),
        },
        "billing_practitioner_id": d.billing_practitioner_id,
        "rendering_practitioner_id": d.rendering_practitioner_id,
        "expected_payment": None if d.expected_payment is None else str(d.expected_payment),
    }


def _decision_tail(d: Decision, out: dict[str, Any]) -> None:
    out["documentation_gaps"] = list(d.documentation_gaps)
    out["rule_year"] = d.rule_year
    out["provisional"] = d.provisional
    out["measures"] = measures_to_json(d.measures)


_MEASURE_FIELDS = (
    "days",
    "min_days",
    "days_left",
    "minutes",
    "seconds",
    "min_minutes",
    "max_minutes",
    "next_unit_minutes",
)


def measures_to_json(m: Measures) -> dict[str, Any]:
    """Only the quantities the code counts (``None`` is left out)."""
    out: dict[str, Any] = {}
    for name in _MEASURE_FIELDS:
        value = getattr(m, name)
        if value is not None:
            out[name] = value
    if m.interactive is not None:
        out["interactive"] = m.interactive
    # The counted entries and days are already in the reasons' evidence; stored once.
    return out


# ----------------------------------------------------------------------------------------
# The stored form of one patient's decisions
# ----------------------------------------------------------------------------------------

#: Marks a compact row; rows without it are the plain list of :func:`decision_to_json` dicts.
STORED_SHAPE = 2


def stored_form(decisions: Sequence[Decision]) -> dict[str, Any]:
    """One patient's decisions with each distinct citation, rule value and reason kept once.

    ``reasons`` rows are ``[rule_id, passed, verdict, kind, message, citation index,
    evidence]``; ``parameters`` rows are ``[name, value, layer, citation]``; a decision
    lists indexes into both. Equal reasons (the common checks an enrollment's codes
    share) are stored once, whichever object carries them.
    """
    cites: dict[str, int] = {}
    # Shared objects are the common case (one consent check for all of an enrollment's
    # codes): looked up by identity first (the decisions hold every object for the whole
    # call, so ids stay unique), then by text, comparing whole values only on a match.
    reason_at: dict[int, int] = {}
    by_text: dict[tuple[str, str, str], list[tuple[Reason, int]]] = {}
    param_at: dict[int, int] = {}
    params: dict[ParameterUse, int] = {}
    reason_rows: list[list[Any]] = []
    param_rows: list[list[Any]] = []
    out: list[dict[str, Any]] = []
    for d in decisions:
        mine: list[int] = []
        for r in d.reasons:
            at = reason_at.get(id(r))
            if at is None:
                at = _reason_row(r, by_text, cites, reason_rows)
                reason_at[id(r)] = at
            mine.append(at)
        used: list[int] = []
        for p in d.parameters:
            at = param_at.get(id(p))
            if at is None:
                at = params.get(p)
                if at is None:
                    at = params[p] = len(param_rows)
                    param_rows.append([p.name, p.value, p.layer, p.citation])
                param_at[id(p)] = at
            used.append(at)
        row = _decision_head(d)
        row["reasons"] = mine
        row["parameters"] = used
        _decision_tail(d, row)
        out.append(row)
    return {
        "shape": STORED_SHAPE,
        "citations": list(cites),
        "reasons": reason_rows,
        "parameters": param_rows,
        "decisions": out,
    }


def _reason_row(
    r: Reason,
    by_text: dict[tuple[str, str, str], list[tuple[Reason, int]]],
    cites: dict[str, int],
    rows: list[list[Any]],
) -> int:
    """The index of ``r``'s row, added when no equal reason has one yet."""
    text = (r.rule_id, r.message, r.citation)
    same = by_text.get(text)
    if same is not None:
        for other, at in same:
            if other == r:
                return at
    else:
        same = by_text[text] = []
    c = cites.get(r.citation)
    if c is None:
        c = cites[r.citation] = len(cites)
    at = len(rows)
    rows.append([r.rule_id, r.passed, str(r.verdict), str(r.kind), r.message, c, _evidence(r.evidence)])
    same.append((r, at))
    return at


_NO_EVIDENCE = Evidence()


def _evidence(e: Evidence) -> dict[str, Any]:
    if e is _NO_EVIDENCE or not (e.dates or e.time_entry_ids or e.interactive_entry_ids or e.device_ids):
        return {"values": dict(e.values)} if e.values else {}
    return evidence_to_json(e)


def stored_text(decisions: Sequence[Decision]) -> str:
    """The stored form as JSON text, ready for the ``run_decisions.decisions`` column."""
    return orjson.dumps(stored_form(decisions)).decode()


def stored_decisions_json(value: Any) -> list[dict[str, Any]]:
    """The decisions of one stored row as :func:`decision_to_json` dicts, whatever its form.

    Rows written before the compact form are a plain list and come back as they are.
    Every reason and parameter comes back as its own dict, so a reader may change one
    without touching another decision's.
    """
    if isinstance(value, list):
        return value
    if not isinstance(value, dict) or value.get("shape") != STORED_SHAPE:
        raise ValueError(f"unknown stored decisions form: {str(value)[:80]}")
    cites: list[str] = value["citations"]
    reasons: list[list[Any]] = value["reasons"]
    params: list[list[Any]] = value["parameters"]
    out: list[dict[str, Any]] = []
    for row in value["decisions"]:
        d = dict(row)
        d["reasons"] = [_reason_json(reasons[i], cites) for i in row["reasons"]]
        d["parameters"] = [
            {"name": p[0], "value": p[1], "layer": p[2], "citation": p[3]}
            for p in (params[i] for i in row["parameters"])
        ]
        d["period"] = dict(row["period"])
        d["documentation_gaps"] = list(row["documentation_gaps"])
        d["measures"] = dict(row["measures"])
        out.append(d)
    return out


def _reason_json(row: list[Any], cites: list[str]) -> dict[str, Any]:
    rule_id, passed, verdict, kind, message, cite_at, evidence = row
    return {
        "rule_id": rule_id,
        "passed": passed,
        "verdict": verdict,
        "kind": kind,
        "message": message,
        "citation": cites[cite_at],
        "evidence": {k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in evidence.items()},
    }
