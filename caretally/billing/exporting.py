"""Writing a stored run's claim lines in the formats a billing office submits or files.

Exports read the stored run (not a fresh evaluation), so the file always matches what was
billed and locked. The 837P needs the practice identity and a fresh interchange control
number, kept per organization in ``x12_interchanges`` so ISA13 never repeats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, insert, select

from caretally.billing.run import StoredRun, current_run, stored_decisions, stored_lines, stored_run
from caretally.export.fhir_claim import build_claim_bundle, bundle_json
from caretally.export.tabular import write_csv, write_json
from caretally.export.x12_837p import ProviderName, build_837p
from caretally.model import Address, ClaimPatient, Payer, PracticeIdentity
from caretally.store import schema

FORMATS = ("csv", "json", "x12", "fhir")


class ExportRefused(Exception):
    """The export cannot be made as asked; the message says what to do."""


@dataclass(frozen=True)
class ExportResult:
    run: StoredRun
    path: Path
    lines: int
    control_number: int | None = None


def claim_patients(engine: Engine, org_id: str, ids: set[str]) -> dict[str, ClaimPatient]:
    p = schema.patients
    out: dict[str, ClaimPatient] = {}
    with engine.connect() as conn:
        for r in conn.execute(select(p).where(p.c.org_id == org_id)).mappings():
            if r["patient_id"] not in ids:
                continue
            address = None
            if r["address_line"] and r["city"] and r["state"] and r["postal_code"]:
                address = Address(r["address_line"], r["city"], r["state"], r["postal_code"])
            out[r["patient_id"]] = ClaimPatient(
                patient_id=r["patient_id"],
                family_name=r["family_name"],
                given_name=r["given_name"],
                birth_date=r["birth_date"],
                sex=(r["sex"] or "U")[:1].upper(),
                member_id=r["member_id"],
                payer=Payer(r["payer"]),
                address=address,
            )
    return out


def provider_names(engine: Engine, org_id: str) -> dict[str, ProviderName]:
    pr = schema.practitioners
    names: dict[str, ProviderName] = {}
    with engine.connect() as conn:
        for npi, name in conn.execute(select(pr.c.npi, pr.c.name).where(pr.c.org_id == org_id)):
            if npi:
                parts = name.split()
                names[npi] = ProviderName(family=parts[-1], given=" ".join(parts[:-1]) or None)
    return names


def _next_control_number(engine: Engine, org_id: str, run_id: str, path: Path, when: datetime) -> int:
    x = schema.x12_interchanges
    with engine.begin() as conn:
        last = conn.execute(select(func.max(x.c.control_number)).where(x.c.org_id == org_id)).scalar()
        number = int(last or 0) + 1
        conn.execute(
            insert(x).values(
                org_id=org_id, control_number=number, run_id=run_id, created_at=when, path=str(path)
            )
        )
    return number


def export_month(
    engine: Engine,
    org_id: str,
    month: str,
    fmt: str,
    out: Path,
    *,
    practice: PracticeIdentity | None = None,
    run_id: str | None = None,
    now: datetime | None = None,
) -> ExportResult:
    if fmt not in FORMATS:
        raise ExportRefused(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = current_run(engine, org_id, month) if run_id is None else _run_by_id(engine, org_id, run_id)
    if run is None:
        raise ExportRefused(f"{month} has no billing run yet: run 'caretally bill --month {month}' first")
    lines = stored_lines(engine, run.run_id)
    when = now or datetime.now(UTC)
    out.parent.mkdir(parents=True, exist_ok=True)
    control = None
    if fmt == "csv":
        write_csv(lines, out)
    elif fmt == "json":
        write_json(lines, out)
    else:
        if practice is None:
            raise ExportRefused(
                f"{fmt} export needs the practice identity: pass --practice FILE (see docs/exports.md "
                "and docs/practice.example.toml)"
            )
        patients = claim_patients(engine, org_id, {line.patient_id for line in lines})
        if fmt == "x12":
            control = _next_control_number(engine, org_id, run.run_id, out, when)
            text = build_837p(
                lines,
                patients,
                practice,
                control_number=control,
                created=when,
                provider_names=provider_names(engine, org_id),
            )
            out.write_text(text, encoding="ascii")
        else:
            out.write_text(
                bundle_json(build_claim_bundle(lines, patients, practice, created=when)), encoding="utf-8"
            )
    return ExportResult(run, out, len(lines), control)


def _run_by_id(engine: Engine, org_id: str, run_id: str) -> StoredRun | None:
    r = schema.billing_runs
    with engine.connect() as conn:
        row = conn.execute(select(r).where(r.c.org_id == org_id, r.c.run_id == run_id)).first()
    return None if row is None else stored_run(row)


def write_explanations(engine: Engine, run: StoredRun, out: Path) -> int:
    """Every stored decision of a run as JSON Lines: the auditor's copy of the reasons."""
    decisions = stored_decisions(engine, run.run_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for d in decisions:
            handle.write(json.dumps(d, sort_keys=True) + "\n")
    return len(decisions)
