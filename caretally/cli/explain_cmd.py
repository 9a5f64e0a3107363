"""``caretally explain``: one patient-month's decisions, reasons and evidence."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from caretally.billing.evaluate import evaluate_month
from caretally.billing.payers import PayerRules
from caretally.billing.run import run_by_id, stored_decisions
from caretally.billing.serialize import decision_to_json
from caretally.cli.billing_options import PayerRulesOption, parse_overlays
from caretally.cli.common import (
    CsvOption,
    DbOption,
    JsonOption,
    MonthOption,
    OrgOption,
    UserError,
    console,
    date_callback,
    err_console,
    open_db,
    print_json,
    progress_bar,
    write_csv,
)
from caretally.dates import parse_month
from caretally.model import Decision, ReasonKind, Status, Verdict
from caretally.services.audit import record_cli_access
from caretally.store.db import DEFAULT_ORG

STYLE = {Status.BILLABLE: "green", Status.NOT_BILLABLE: "red", Status.REACHABLE: "yellow"}


def _ranges(days: tuple[date, ...]) -> str:
    """Dates as ISO ranges: 2026-03-01..2026-03-05, 2026-03-09 (how a biller reads a log)."""
    ordered = sorted(set(days))
    parts: list[str] = []
    start = prev = ordered[0]
    for day in [*ordered[1:], None]:
        if day is not None and (day - prev).days == 1:
            prev = day
            continue
        parts.append(start.isoformat() if start == prev else f"{start.isoformat()}..{prev.isoformat()}")
        if day is not None:
            start = prev = day
    return ", ".join(parts)


def _evidence_text(d: Decision) -> str:
    lines: list[str] = []
    for r in d.reasons:
        e = r.evidence
        if e.dates and len(e.dates) > 1:
            lines.append(f"{len(set(e.dates))} days: {_ranges(e.dates)}")
        if e.time_entry_ids:
            lines.append(f"time entries: {', '.join(e.time_entry_ids[:12])}")
        if e.interactive_entry_ids:
            lines.append(f"live contact: {', '.join(e.interactive_entry_ids)}")
        if e.device_ids:
            lines.append(f"devices: {', '.join(e.device_ids)}")
    unique: list[str] = []
    for line in lines:
        if line not in unique:
            unique.append(line)
    return "\n".join(unique)


ORDER = {Status.BILLABLE: 0, Status.REACHABLE: 1, Status.NOT_BILLABLE: 2}


def render(decisions: list[Decision], patient: str, month: str) -> None:
    table = Table(title=f"Patient {patient} — {month}", show_lines=True, expand=True)
    table.add_column("code", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("units", justify="right")
    table.add_column("date of service", no_wrap=True)
    table.add_column("period", no_wrap=True)
    table.add_column("reasons", ratio=3)
    table.add_column("evidence", ratio=2)
    for d in sorted(decisions, key=lambda d: (d.program.value, ORDER[d.status], d.code, d.period.start)):
        reasons = Text()
        for i, r in enumerate(d.reasons):
            if i:
                reasons.append("\n")
            reasons.append("✓ " if r.passed else "✗ ", style="green" if r.passed else "red")
            reasons.append(r.message)
        for gap in d.documentation_gaps:
            reasons.append(f"\n! documentation gap: {gap}", style="yellow")
        table.add_row(
            f"{d.code}\n[dim]{d.program.value}[/dim]",
            Text(d.status.value, style=STYLE[d.status]),
            str(d.units),
            d.date_of_service.isoformat() if d.date_of_service else "—",
            f"{d.period.start}\n{d.period.end}",
            reasons,
            _evidence_text(d),
        )
    console.print(table)


def _key(d: dict[str, Any]) -> tuple[str, str, str]:
    return (d["enrollment_id"], d["code"], d["period"]["start"])


def _outcome(d: dict[str, Any] | None) -> str:
    if d is None:
        return "—"
    dos = d["date_of_service"] or "no DOS"
    pay = d["expected_payment"] or "—"
    return f"{d['status']} ×{d['units']} {dos} {pay}"


def compare_run(stored: list[dict[str, Any]], live: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored and live decisions side by side, keyed by enrollment, code and period."""
    was = {_key(d): d for d in stored}
    now = {_key(d): d for d in live}
    fields = ("status", "units", "date_of_service", "expected_payment")
    out = []
    for key in sorted(was.keys() | now.keys()):
        a, b = was.get(key), now.get(key)
        same = a is not None and b is not None and all(a[f] == b[f] for f in fields)
        evidence_same = same and a == b
        out.append(
            {
                "enrollment_id": key[0],
                "code": key[1],
                "period_start": key[2],
                "stored": a,
                "live": b,
                "differs": not same,
                "evidence_differs": not evidence_same,
            }
        )
    return out


def render_comparison(rows: list[dict[str, Any]], run_id: str, patient: str, month: str) -> None:
    table = Table(title=f"Patient {patient} — {month}: run {run_id} beside the live data", expand=True)
    table.add_column("code", no_wrap=True)
    table.add_column("period start", no_wrap=True)
    table.add_column(f"run {run_id[:8]}")
    table.add_column("live data now")
    table.add_column("")
    for row in rows:
        mark = "changed" if row["differs"] else ("evidence changed" if row["evidence_differs"] else "")
        table.add_row(
            row["code"],
            row["period_start"],
            _outcome(row["stored"]),
            _outcome(row["live"]),
            Text(mark, style="yellow" if mark else ""),
        )
    console.print(table)


#: ``explain --csv``: one row per decision. The first six are what a biller filters on;
#: the rule-id lists are the blocking reasons (requirements and conflicts), ``;``-separated.
CSV_HEADER = (
    "patient_id",
    "month",
    "code",
    "status",
    "units",
    "date_of_service",
    "failed_rules",
    "pending_rules",
    "program",
    "enrollment_id",
    "period_start",
    "period_end",
    "expected_payment",
)


def _blocking(d: Decision, verdict: Verdict) -> str:
    return ";".join(
        r.rule_id for r in d.reasons if r.verdict is verdict and r.kind is not ReasonKind.ADVISORY
    )


def csv_row(d: Decision, month: str) -> list[object]:
    return [
        d.patient_id,
        month,
        d.code,
        d.status.value,
        d.units,
        d.date_of_service,
        _blocking(d, Verdict.FAIL),
        _blocking(d, Verdict.PENDING),
        d.program.value,
        d.enrollment_id,
        d.period.start,
        d.period.end,
        d.expected_payment,
    ]


def register(app: typer.Typer) -> None:
    @app.command("explain")
    def explain(
        month: MonthOption,
        patient: Annotated[
            str | None,
            typer.Option(
                "--patient", help="Patient id (without it: every patient of the month, --csv or --json)."
            ),
        ] = None,
        as_of: Annotated[
            str | None,
            typer.Option(
                "--as-of",
                help="Judge as of this date (default: the month's last day).",
                callback=date_callback,
            ),
        ] = None,
        payer_rules: PayerRulesOption = None,
        run_id: Annotated[
            str | None,
            typer.Option("--run", help="Show what this stored run decided, beside what the data says now."),
        ] = None,
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG,
        as_json: JsonOption = False,
        as_csv: CsvOption = False,
    ) -> None:
        """Show every code considered for one patient-month, with reasons and evidence.

        ``--payer-rules PAYER=OVERLAY`` judges that payer's patients by an overlay, as ``bill``
        does. ``--run ID`` shows a stored run's decisions beside the live ones and marks
        every difference. ``--csv`` prints one row per decision (code, status, units, date of
        service, the failed and pending rule ids); without ``--patient`` it covers the month.
        """
        if as_json and as_csv:
            raise UserError("--json and --csv cannot be combined", "choose one output format", 2)
        if patient is None and not (as_json or as_csv):
            raise UserError(
                "explain needs --patient, or --csv / --json for every patient of the month",
                "e.g. caretally explain --month 2026-03 --patient P123",
                2,
            )
        if run_id is not None and (patient is None or as_csv):
            raise UserError("--run compares one patient: give --patient, without --csv", None, 2)
        period = parse_month(month)
        engine = open_db(db_url, org)
        rules = PayerRules.load(parse_overlays(payer_rules))
        day = date.fromisoformat(as_of) if as_of else None
        chosen = {patient} if patient is not None else None
        with progress_bar(f"explaining {month}", show=patient is None) as progress:
            results = list(
                evaluate_month(engine, org, period, rules, as_of=day, patients=chosen, progress=progress)
            )
        decisions = [d for _, ds in results for d in ds]
        record_cli_access(
            engine,
            org,
            "patient_month.read",
            f"patients/{patient}/months/{month}" if patient is not None else f"months/{month}/explanations",
            sorted({facts.patient_id for facts, _ in results}) if patient is None else [patient],
        )
        if as_csv:
            write_csv((csv_row(d, month) for d in decisions), CSV_HEADER)
            if patient is not None and not decisions:
                err_console.print(f"No enrollment of patient {patient} touches {month}.", markup=False)
                raise typer.Exit(1)
            return
        if run_id is not None:
            assert patient is not None
            run = run_by_id(engine, org, run_id, month)
            if run is None:
                err_console.print(f"caretally: no run {run_id} for {month} in organization {org}")
                raise typer.Exit(1)
            rows = compare_run(
                stored_decisions(engine, run_id, patient), [decision_to_json(d) for d in decisions]
            )
            if as_json:
                print_json({"run_id": run_id, "patient_id": patient, "month": month, "decisions": rows})
            else:
                render_comparison(rows, run_id, patient, month)
            return
        if as_json:
            print_json([decision_to_json(d) for d in decisions])
            return
        assert patient is not None
        if not decisions:
            err_console.print(f"No enrollment of patient {patient} touches {month}.")
            raise typer.Exit(1)
        render(decisions, patient, month)
