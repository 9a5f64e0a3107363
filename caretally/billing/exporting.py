"""Writing a stored run's claim lines in the formats a billing office submits or files.

Exports read the stored run (not a fresh evaluation), so the file always matches what was
billed and locked. The 837P needs the practice identity and a fresh interchange control
number per file, kept per organization in ``x12_interchanges`` so ISA13 never repeats.

The 837P of a run that amends a locked one holds only the corrections (see
:mod:`caretally.export.corrections`), because the locked claims were already sent;
``whole_month`` writes every claim as an original instead, for a payer that never got them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, insert, select

from caretally.billing.run import StoredRun, current_run, run_by_id, stored_decisions, stored_lines
from caretally.errors import UNUSABLE_SETTINGS, Problem, Refusal
from caretally.export.charges import resolve_charges
from caretally.export.corrections import corrections
from caretally.export.fhir_claim import build_claim_bundle, bundle_json
from caretally.export.routing import InterchangePlan, plan_interchanges
from caretally.export.tabular import write_csv, write_json
from caretally.export.x12_837p import PRODUCER as X12_PRODUCER
from caretally.export.x12_837p import ProviderName, render_837p, routed_claims
from caretally.model import Address, ClaimLine, ClaimPatient, Payer, PracticeIdentity
from caretally.store import schema

FORMATS = ("csv", "json", "x12", "fhir")


class ExportRefused(Refusal):
    """The export cannot be made as asked; ``problem`` says why and what to do."""


def _refused(
    code: str,
    message: str,
    hint: str | None,
    *,
    month: str | None = None,
    run_id: str | None = None,
    exit_code: int = 1,
) -> ExportRefused:
    problem = Problem("<export>", None, None, code, message, hint=hint, run_id=run_id, month=month)
    return ExportRefused(problem, exit_code)


@dataclass(frozen=True)
class ExportedFile:
    """One interchange written: where, its ISA13, and how many claims of each frequency and payer."""

    path: Path
    control_number: int
    receiver_id: str
    frequencies: Mapping[str, int]
    payers: Mapping[str, int] = field(default_factory=dict)  # directory entry label → claims


@dataclass(frozen=True)
class ExportResult:
    run: StoredRun
    path: Path
    lines: int
    control_number: int | None = None
    files: tuple[ExportedFile, ...] = field(default_factory=tuple)
    corrections_of: str | None = None  # the locked run an amendment's 837P corrects


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
            # The named plan is an optional patients column that ingest keeps in ``extra``.
            extra = r["extra"] if isinstance(r["extra"], dict) else {}
            plan = str(extra.get("payer_plan") or "").strip() or None
            out[r["patient_id"]] = ClaimPatient(
                patient_id=r["patient_id"],
                family_name=r["family_name"],
                given_name=r["given_name"],
                birth_date=r["birth_date"],
                sex=(r["sex"] or "U")[:1].upper(),
                member_id=r["member_id"],
                payer=Payer(r["payer"]),
                address=address,
                payer_plan=plan,
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
    whole_month: bool = False,
    claim_numbers: Mapping[str, str] | None = None,
) -> ExportResult:
    """Write the month's current run (or ``run_id``) as ``fmt``; see docs/exports.md.

    An 837P with claims for several receivers becomes one file per receiver next to
    ``out`` (:func:`interchange_paths`); ``ExportResult.files`` lists them.
    """
    if fmt not in FORMATS:
        raise _refused(
            "unknown_format",
            f"unknown format {fmt!r}",
            f"choose one of {', '.join(FORMATS)}",
            month=month,
            exit_code=UNUSABLE_SETTINGS,
        )
    run = current_run(engine, org_id, month) if run_id is None else run_by_id(engine, org_id, run_id)
    if run is None and run_id is not None:
        raise _refused(
            "unknown_run",
            f"no run {run_id} in organization {org_id}",
            "list the stored runs with: caretally runs list",
            month=month,
            run_id=run_id,
        )
    if run is None:
        raise _refused(
            "no_run",
            f"{month} has no billing run yet",
            f"bill it first: caretally bill --month {month}",
            month=month,
        )
    lines = stored_lines(engine, run.run_id)
    when = now or datetime.now(UTC)
    marks = provisional_lines(engine, run)
    if fmt == "csv":
        out.parent.mkdir(parents=True, exist_ok=True)
        write_csv(lines, out, marks)
        return ExportResult(run, out, len(lines))
    if fmt == "json":
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(lines, out, marks)
        return ExportResult(run, out, len(lines))
    if run.provisional and not run.provisional_accepted:
        years = ", ".join((run.provisional or {}).get("rule_years") or [])
        raise _refused(
            "provisional_rules",
            f"run {run.run_id} of {run.month} was judged by a proposed rule-year ({years}); "
            f"its claims are not written as {fmt} until the run is accepted",
            f"lock it with: caretally lock --month {run.month} --accept-provisional — or bill the month "
            "again once the final rule is loaded",
            month=run.month,
            run_id=run.run_id,
        )
    if practice is None:
        raise _refused(
            "practice_needed",
            f"{fmt} export needs the practice identity: pass --practice FILE",
            "see docs/exports.md and docs/practice.example.toml",
            month=month,
            run_id=run.run_id,
            exit_code=UNUSABLE_SETTINGS,
        )
    lines = resolve_charges(lines, practice, _fee_codes(engine, run.run_id), producer=fmt)
    if fmt == "fhir":
        patients = claim_patients(engine, org_id, {line.patient_id for line in lines})
        text = bundle_json(build_claim_bundle(lines, patients, practice, created=when))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        return ExportResult(run, out, len(lines))
    return _export_x12(engine, org_id, run, lines, out, practice, when, whole_month, claim_numbers or {})


def _export_x12(
    engine: Engine,
    org_id: str,
    run: StoredRun,
    lines: list[ClaimLine],
    out: Path,
    practice: PracticeIdentity,
    when: datetime,
    whole_month: bool,
    claim_numbers: Mapping[str, str],
) -> ExportResult:
    locked: list[ClaimLine] | None = None
    if run.amends_run_id is not None and not whole_month:
        locked = resolve_charges(
            stored_lines(engine, run.amends_run_id),
            practice,
            _fee_codes(engine, run.amends_run_id),
            producer=X12_PRODUCER,
        )
    ids = {line.patient_id for line in [*lines, *(locked or [])]}
    patients = claim_patients(engine, org_id, ids)
    claims = routed_claims(lines, patients, practice) if lines else []
    if locked is not None:
        before = routed_claims(locked, patients, practice) if locked else []
        claims = corrections(before, claims, claim_numbers)
        if not claims:
            raise _refused(
                "amendment_changes_nothing",
                f"amendment changes nothing: run {run.run_id} changes no claim of the locked run "
                f"{run.amends_run_id}, so there is nothing to correct",
                "--all writes the whole month as original claims",
                month=run.month,
                run_id=run.run_id,
            )
    elif not lines:
        raise _refused(
            "no_claim_lines",
            f"run {run.run_id} has no claim lines to export",
            "nothing in the month was billable; `caretally leakage` shows what came close",
            month=run.month,
            run_id=run.run_id,
        )
    plans = plan_interchanges(claims)
    names = provider_names(engine, org_id)
    for plan in plans:  # every fault of every file before a control number is spent
        render_837p(plan, practice, control_number=1, created=when, provider_names=names)
    files: list[ExportedFile] = []
    texts: list[tuple[Path, str]] = []
    for plan, path in zip(plans, interchange_paths(out, plans), strict=True):
        control = _next_control_number(engine, org_id, run.run_id, path, when)
        texts.append(
            (path, render_837p(plan, practice, control_number=control, created=when, provider_names=names))
        )
        frequencies = Counter(claim.frequency for claim in plan.claims)
        payers = Counter(claim.route.label for claim in plan.claims if claim.route)
        files.append(
            ExportedFile(
                path,
                control,
                plan.receiver.id,
                dict(sorted(frequencies.items())),
                dict(sorted(payers.items())),
            )
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in texts:
        path.write_text(text, encoding="ascii")
    written = sum(len(c.lines) for c in claims)
    return ExportResult(
        run,
        files[0].path,
        written,
        files[0].control_number,
        tuple(files),
        run.amends_run_id if locked is not None else None,
    )


def provisional_lines(engine: Engine, run: StoredRun) -> Callable[[ClaimLine], str] | None:
    """For a run a proposed rule-year judged: line → that rule-year ("" when final rules did).

    Read from the run's stored decisions (a line is its billable decision), and only for
    such runs, so an ordinary export reads nothing more than its lines.
    """
    if not run.provisional:
        return None
    judged: dict[tuple[str, str, str, str], str] = {}
    for d in stored_decisions(engine, run.run_id):
        if d.get("provisional") and d.get("status") == "billable":
            key = (d["patient_id"], d["enrollment_id"], d["code"], d["period"]["start"])
            judged[key] = str(d.get("rule_year") or "")

    def mark(line: ClaimLine) -> str:
        return judged.get((line.patient_id, line.enrollment_id, line.code, line.period_start.isoformat()), "")

    return mark


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._") or "receiver"


def interchange_paths(out: Path, plans: Sequence[InterchangePlan]) -> list[Path]:
    """``out`` itself for a single interchange; else ``<stem>.<receiver>[.<payer>]<suffix>`` beside it.

    The receiver id is in the name so a biller sees which upload goes where.
    """
    if len(plans) == 1:
        return [out]
    paths: list[Path] = []
    for plan in plans:
        tag = _slug(plan.receiver.id) + (f".{_slug(plan.payer_label)}" if plan.payer_label else "")
        path = out.with_name(f"{out.stem}.{tag}{out.suffix}")
        number = 2
        while path in paths:  # two receivers that share an id but not a name
            path = out.with_name(f"{out.stem}.{tag}-{number}{out.suffix}")
            number += 1
        paths.append(path)
    return paths


def _fee_codes(engine: Engine, run_id: str) -> frozenset[str]:
    """Codes the run priced from a bill-time fee schedule (stored in the run's settings)."""
    r = schema.billing_runs
    with engine.connect() as conn:
        settings = conn.execute(select(r.c.settings).where(r.c.run_id == run_id)).scalar()
    fees = (settings or {}).get("fee_schedule") or {}
    return frozenset(fees)


def write_explanations(engine: Engine, run: StoredRun, out: Path) -> int:
    """Every stored decision of a run as JSON Lines: the auditor's copy of the reasons."""
    decisions = stored_decisions(engine, run.run_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for d in decisions:
            handle.write(json.dumps(d, sort_keys=True) + "\n")
    return len(decisions)
