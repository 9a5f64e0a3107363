"""``caretally bill`` and ``caretally lock``: the month run and its lock."""

from __future__ import annotations

from collections import Counter

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from caretally.billing.run import RunError, RunResult, bill_month, lock_month
from caretally.cli.billing_options import (
    FeeScheduleOption,
    GpciOption,
    LocalityOption,
    PayerRulesOption,
    PosOption,
    QpOption,
    settings_from,
)
from caretally.cli.common import (
    DbOption,
    JsonOption,
    MonthOption,
    OrgOption,
    console,
    err_console,
    open_db,
    print_json,
)
from caretally.dates import parse_month
from caretally.errors import ProblemsError
from caretally.export.tabular import line_record
from caretally.store.db import DEFAULT_ORG

SHOW_WARNINGS = 5
WARNING_LABEL = {
    "time.overlap": "time entries repeating minutes the same performer logged for the patient",
    "time.overlap_other_patient": "time entries overlapping another patient's by the same performer",
}


def money(amount: object) -> str:
    return f"${amount:,.2f}"


def render_summary(result: RunResult) -> None:
    s = result.summary
    if result.outcome == "unchanged":
        console.print(
            f"[bold]{result.month}[/bold]: data, rules, settings and engine unchanged — the run is identical "
            f"to run {result.run_id} ({result.status}); nothing new was stored."
        )
    else:
        note = f", amending locked run {result.amends_run_id}" if result.amends_run_id else ""
        console.print(f"[bold]{result.month}[/bold]: run {result.run_id} stored as {result.status}{note}.")
    console.print(
        f"{s.patients} patients evaluated, {s.decisions} decisions, {s.lines} billable lines, "
        f"expected revenue [bold green]{money(s.expected_revenue)}[/bold green]."
    )
    table = Table(title="Billable lines by code", show_footer=True)
    table.add_column("code", footer="total")
    table.add_column("lines", justify="right", footer=str(s.lines))
    table.add_column("units", justify="right", footer=str(sum(s.units_by_code.values())))
    table.add_column("expected payment", justify="right", footer=money(s.expected_revenue))
    for code in sorted(s.lines_by_code):
        table.add_row(
            code, str(s.lines_by_code[code]), str(s.units_by_code[code]), money(s.payment_by_code[code])
        )
    console.print(table)
    if s.not_billable_reasons:
        reasons = Table(title="Most common reasons a code was not billable")
        reasons.add_column("rule")
        reasons.add_column("decisions", justify="right")
        reasons.add_column("example")
        for rule_id, count in s.not_billable_reasons.most_common(8):
            reasons.add_row(rule_id, str(count), s.reason_examples[rule_id])
        console.print(reasons)
    for payer, count in sorted(s.payers_on_medicare_rules.items()):
        console.print(
            f"[yellow]note:[/yellow] {count} {payer} patient(s) were judged by Medicare rules "
            "(no --payer-rules overlay given for that payer)."
        )
    if s.warnings:
        kinds = Counter(w.code for w in s.warnings)
        listing = ", ".join(f"{n} {WARNING_LABEL.get(code, code)}" for code, n in sorted(kinds.items()))
        console.print(f"[yellow]warnings:[/yellow] {listing} (--json lists every one); first:")
        for w in s.warnings[:SHOW_WARNINGS]:
            console.print(f"  {w.patient_id}: {w.message}")
    for p in s.problems:
        err_console.print(f"[red]problem:[/red] {p}")
    if result.changes:
        changes = Table(title=f"Amendments to locked run {result.amends_run_id}")
        changes.add_column("change")
        changes.add_column("line")
        changes.add_column("detail")
        for c in result.changes:
            detail = ""
            if c.kind == "changed" and c.before and c.after:
                detail = ", ".join(
                    f"{k}: {c.before[k]} → {c.after[k]}" for k in c.after if c.before.get(k) != c.after[k]
                )
            changes.add_row(c.kind, c.key, detail)
        console.print(changes)


def result_json(result: RunResult) -> dict[str, object]:
    s = result.summary
    return {
        "run_id": result.run_id,
        "month": result.month,
        "outcome": result.outcome,
        "status": result.status,
        "amends_run_id": result.amends_run_id,
        "patients": s.patients,
        "decisions": s.decisions,
        "lines": s.lines,
        "expected_revenue": str(s.expected_revenue),
        "by_code": {
            code: {
                "lines": s.lines_by_code[code],
                "units": s.units_by_code[code],
                "expected_payment": str(s.payment_by_code[code]),
            }
            for code in sorted(s.lines_by_code)
        },
        "not_billable_reasons": dict(s.not_billable_reasons.most_common()),
        "problems": [p.to_json() for p in s.problems],
        "warnings": [w.to_json() for w in s.warnings],
        "amendments": [
            {"change": c.kind, "line": c.key, "before": c.before, "after": c.after} for c in result.changes
        ],
        "claim_lines": [line_record(line) for line in result.lines],
    }


def register(app: typer.Typer) -> None:
    @app.command("bill")
    def bill(
        month: MonthOption,
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG,
        locality: LocalityOption = None,
        fee_schedule: FeeScheduleOption = None,
        pos: PosOption = "11",
        qp: QpOption = False,
        gpci: GpciOption = None,
        payer_rules: PayerRulesOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Bill a month: decisions and priced claim lines for every enrolled patient, stored as a run.

        The month holds its calendar-month services and the 30-day device periods whose date of
        service falls in it. Billing again on unchanged data stores nothing and says so; billing a
        locked month makes a new run that lists amendments and leaves the locked run untouched.
        """
        period = parse_month(month)
        try:
            settings, rules = settings_from(locality, fee_schedule, pos, qp, gpci, payer_rules)
            engine = open_db(db_url, org)
            if as_json:
                result = bill_month(engine, org, period, rules, settings)
            else:
                with Progress(
                    TextColumn("billing {task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=err_console,
                    transient=True,
                ) as bar:
                    task = bar.add_task(month, total=None)
                    result = bill_month(
                        engine, org, period, rules, settings, progress=lambda n: bar.advance(task, n)
                    )
        except ProblemsError as exc:
            for p in exc.problems:
                err_console.print(str(p))
            raise typer.Exit(2) from None
        if as_json:
            print_json(result_json(result))
        else:
            render_summary(result)
        if result.problems:
            # beancount's way: everyone else is billed and stored, every problem is listed, exit 1.
            raise typer.Exit(1)

    @app.command("lock")
    def lock(month: MonthOption, db_url: DbOption = None, org: OrgOption = DEFAULT_ORG) -> None:
        """Lock the month's current run: it becomes the record and is never changed again."""
        engine = open_db(db_url, org)
        try:
            run = lock_month(engine, org, month)
        except RunError as exc:
            err_console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
        console.print(f"{month}: run {run.run_id} locked at {run.locked_at:%Y-%m-%d %H:%M:%S} UTC.")
