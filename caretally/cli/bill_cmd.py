"""``caretally bill`` and ``caretally lock``: the month run and its lock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from caretally.billing.incremental import bill_month_incremental
from caretally.billing.run import LineChange, RunError, RunResult, bill_month, lock_month, provisional_json
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
    progress_bar,
    refused,
    say_waiting,
)
from caretally.dates import parse_month
from caretally.errors import ProblemsError
from caretally.export.tabular import line_record
from caretally.store.db import DEFAULT_ORG

if TYPE_CHECKING:
    from caretally.billing.whatif import WhatIf

IncrementalOption = Annotated[
    bool,
    typer.Option(
        "--incremental",
        help="Evaluate only the patients whose data changed since the month's last run; "
        "a full run when that cannot be vouched for (the reason is printed).",
    ),
]

SHOW_WARNINGS = 5
WARNING_LABEL = {
    "time.overlap": "time entries repeating minutes the same performer logged for the patient",
    "time.overlap_other_patient": "time entries overlapping another patient's by the same performer",
}


def money(amount: object) -> str:
    return f"${amount:,.2f}"


def render_provisional(years: Mapping[str, str], what: str) -> None:
    """The banner of anything judged by a proposed rule-year: which, and what it means."""
    if not years:
        return
    names = ", ".join(sorted(years))
    console.print(
        f"[bold yellow]PROVISIONAL:[/bold yellow] {what} judged by a proposed rule-year ({names}), "
        "not final rules; amounts are derived estimates and may change with the final rule.",
        soft_wrap=True,
    )
    for layers in sorted(years):
        if years[layers]:
            console.print(f"  source: {years[layers]}", soft_wrap=True, markup=False, highlight=False)


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
    render_provisional(s.provisional, "this run was")
    if s.provisional:
        console.print(
            f"  `caretally lock --month {result.month}` refuses it unless --accept-provisional is given; "
            "its 837P and FHIR exports wait for that acceptance.",
            soft_wrap=True,
            markup=False,
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
    for note in s.undecided_notes():
        console.print(f"[yellow]note:[/yellow] {note}.")
    for payer, count in sorted(s.payers_on_medicare_rules.items()):
        console.print(
            f"[yellow]note:[/yellow] {count} {payer} patient(s) were judged by Medicare rules "
            "(no --payer-rules overlay given for that payer)."
        )
    if s.warnings_total:
        kinds = s.warnings_by_code
        listing = ", ".join(f"{n} {WARNING_LABEL.get(code, code)}" for code, n in sorted(kinds.items()))
        console.print(f"[yellow]warnings:[/yellow] {listing} (--json lists every one); first:")
        for w in result.warnings(SHOW_WARNINGS).items:
            console.print(f"  {w.patient_id}: {w.message}")
    for p in s.problems:
        err_console.print(f"[red]problem:[/red] {p}")
    if result.amends_run_id is not None:
        render_amendments(result)


#: Line fields a biller reads first when an amendment changes a line.
CHANGE_ORDER = ("units", "date_of_service", "modifiers", "expected_payment", "charge", "rendering_npi")


def changed_fields(change: LineChange) -> list[str]:
    """The fields of a changed line that differ, the ones a biller reads first leading."""
    if change.before is None or change.after is None:
        return []
    fields = [k for k in change.after if change.before.get(k) != change.after[k]]
    return sorted(
        fields, key=lambda k: (CHANGE_ORDER.index(k) if k in CHANGE_ORDER else len(CHANGE_ORDER), k)
    )


def change_detail(change: LineChange) -> str:
    """What an amendment does to one line, in words: ``units: 1 → 2, expected_payment: …``."""
    if change.kind == "changed" and change.before and change.after:
        return ", ".join(f"{k}: {change.before[k]} → {change.after[k]}" for k in changed_fields(change))
    line = change.after if change.kind == "added" else change.before
    if not line:
        return ""
    what = "new line" if change.kind == "added" else "line dropped"
    units = f"{line['units']} unit" + ("" if line["units"] == 1 else "s")
    return f"{what}: {units}, expected payment ${line['expected_payment']}"


def render_amendments(result: RunResult) -> None:
    if result.changes_nothing:
        console.print(
            f"[yellow]amendment changes nothing:[/yellow] every claim line equals locked run "
            f"{result.amends_run_id}'s. The run keeps the new evidence; there is no correction to export."
        )
        return
    kinds = Counter(c.kind for c in result.changes)
    table = Table(
        title=f"Amendments to locked run {result.amends_run_id}: "
        + ", ".join(f"{kinds[k]} {k}" for k in ("added", "removed", "changed"))
    )
    for column in ("change", "patient", "code", "date of service", "what changed"):
        table.add_column(column)
    for c in result.changes:
        line = c.after or c.before or {}
        table.add_row(
            c.kind, str(line.get("patient_id", "")), str(line.get("code", "")),
            str(line.get("date_of_service", "")), change_detail(c),
        )  # fmt: skip
    console.print(table)


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
        "undecided_programs": s.undecided_json(),
        "problems": [p.to_json() for p in s.problems],
        "warnings": [w.to_json() for w in result.warnings().items],
        "provisional": provisional_json(s.provisional) if s.provisional else None,
        "amendment_changes_nothing": result.changes_nothing,
        "amendments": [
            {
                "change": c.kind,
                "line": c.key,
                "fields": changed_fields(c),
                "before": c.before,
                "after": c.after,
            }
            for c in result.changes
        ],
        "claim_lines": [line_record(line) for line in result.lines],
    }


def render_what_if(result: WhatIf) -> None:
    y = result.year
    console.print(
        f"[bold]{result.month}[/bold]: run {result.run_id} ({result.run_status}) beside the same month "
        f"judged by rule-year {y.year} ({y.layers}, {y.status}); nothing was stored.",
        soft_wrap=True,
    )
    render_provisional(result.provisional, "the what-if was")
    table = Table(title=f"Expected payment by code: current run vs {y.year} rules", show_footer=True)
    difference = result.what_if_total - result.current_total
    table.add_column("code", footer="total")
    table.add_column("current lines", justify="right")
    table.add_column("current payment", justify="right", footer=money(result.current_total))
    table.add_column(f"{y.year} lines", justify="right")
    table.add_column(f"{y.year} payment", justify="right", footer=money(result.what_if_total))
    table.add_column("difference", justify="right", footer=signed(difference))
    for code in result.codes:
        now, then = result.pair(code)
        table.add_row(
            code, str(now.lines), money(now.payment), str(then.lines), money(then.payment),
            signed(then.payment - now.payment),
        )  # fmt: skip
    console.print(table)
    for p in result.problems:
        err_console.print(f"[red]problem:[/red] {p}")


def signed(amount: object) -> str:
    text = money(abs(amount))  # type: ignore[call-overload]
    return f"-{text}" if amount < 0 else f"+{text}"  # type: ignore[operator]


WhatIfOption = Annotated[
    int | None,
    typer.Option(
        "--what-if-rules",
        help="Judge the month's stored data again by this rule-year (e.g. 2027) and show the revenue "
        "difference per code against the current run. Nothing is stored.",
        metavar="YEAR",
    ),
]
AcceptProvisionalOption = Annotated[
    bool,
    typer.Option(
        "--accept-provisional",
        help="Lock a run judged by a proposed (not final) rule-year anyway; the acceptance is recorded.",
    ),
]


def _what_if(
    month: str, db_url: str | None, org: str, year: int, gpci: object, as_json: bool, others: list[str]
) -> None:
    from caretally.billing.whatif import what_if_month

    if others:
        raise typer.BadParameter(
            f"--what-if-rules judges with the stored run's own settings; leave out {', '.join(others)}",
            param_hint="--what-if-rules",
        )
    engine = open_db(db_url, org)
    try:
        result = what_if_month(engine, org, parse_month(month), year, gpci_path=gpci)  # type: ignore[arg-type]
    except RunError as exc:
        raise refused(exc, as_json) from None
    if as_json:
        print_json(result.to_json())
    else:
        render_what_if(result)
    if result.problems:
        raise typer.Exit(1)


class EngineChoice(StrEnum):
    """``--engine``: who judges the patient-months of a month run."""

    FULL = "full"
    COLUMNAR = "columnar"


EngineOption = Annotated[
    EngineChoice,
    typer.Option(
        "--engine",
        help="full (default): the rules engine judges every patient-month and stores its reasons; "
        "columnar: the columnar pass decides the months it can decide exactly, in bulk, and the "
        "engine the rest (same claim lines; reasons made on demand from a facts snapshot, refused "
        "once the run's rules can no longer be loaded)",
    ),
]


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
        what_if_rules: WhatIfOption = None,
        as_json: JsonOption = False,
        engine_choice: EngineOption = EngineChoice.FULL,
        incremental: IncrementalOption = False,
    ) -> None:
        """Bill a month: decisions and priced claim lines for every enrolled patient, stored as a run.

        The month holds its calendar-month services and the 30-day device periods whose date of
        service falls in it. Billing again on unchanged data stores nothing and says so; billing a
        locked month makes a new run that lists amendments and leaves the locked run untouched.
        With --what-if-rules YEAR the stored month is judged again by that rule-year and compared
        with its current run, and nothing is stored. With --incremental only the patients whose
        data changed since the month's last run are evaluated (the rest are carried forward), and
        the stored run is the one a full run would store; when that cannot be vouched for, the
        full run is made and the reason printed.
        """
        if what_if_rules is not None:
            others = [
                flag
                for flag, given in (
                    ("--locality", locality is not None),
                    ("--fee-schedule", fee_schedule is not None),
                    ("--pos", pos != "11"),
                    ("--qp", qp),
                    ("--payer-rules", bool(payer_rules)),
                )
                if given
            ]
            _what_if(month, db_url, org, what_if_rules, gpci, as_json, others)
            return
        if incremental and engine_choice is EngineChoice.COLUMNAR:
            err_console.print(
                "caretally: --incremental carries stored decisions forward; use it with --engine full",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2)
        period = parse_month(month)
        try:
            settings, rules = settings_from(locality, fee_schedule, pos, qp, gpci, payer_rules)
            engine = open_db(db_url, org)
            how = None
            with progress_bar(f"billing {month}", show=not as_json) as progress:
                if incremental:
                    result, how = bill_month_incremental(
                        engine, org, period, rules, settings, progress=progress, on_wait=say_waiting
                    )
                else:
                    result = bill_month(
                        engine,
                        org,
                        period,
                        rules,
                        settings,
                        progress=progress,
                        on_wait=say_waiting,
                        engine_choice=engine_choice.value,
                    )
        except ProblemsError as exc:
            for p in exc.problems:
                err_console.print(str(p))
            raise typer.Exit(2) from None
        except RunError as exc:
            raise refused(exc, as_json) from None
        if as_json:
            print_json(result_json(result) | ({"incremental": how.to_json()} if how else {}))
        else:
            if how is not None:
                err_console.print(
                    f"incremental: {how.mode} ({how.reason}); {how.evaluated} patient(s) evaluated, "
                    f"{how.carried} carried forward",
                    soft_wrap=True,
                )
            render_summary(result)
        if result.problems:
            # beancount's way: everyone else is billed and stored, every problem is listed, exit 1.
            raise typer.Exit(1)

    @app.command("lock")
    def lock(
        month: MonthOption,
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG,
        accept_provisional: AcceptProvisionalOption = False,
        as_json: JsonOption = False,
    ) -> None:
        """Lock the month's current run: it becomes the record and is never changed again.

        A run judged by a proposed rule-year (CY2027 before its final rule) is refused
        (provisional_rules) unless --accept-provisional is given.
        """
        engine = open_db(db_url, org)
        try:
            run = lock_month(engine, org, month, on_wait=say_waiting, accept_provisional=accept_provisional)
        except RunError as exc:
            raise refused(exc, as_json) from None
        if as_json:
            print_json({"ok": True, "run_id": run.run_id, "month": month, "status": run.status,
                        "locked_at": run.locked_at.isoformat() if run.locked_at else None,
                        "provisional": run.provisional})  # fmt: skip
            return
        console.print(f"{month}: run {run.run_id} locked at {run.locked_at:%Y-%m-%d %H:%M:%S} UTC.")
        if run.provisional:
            years = ", ".join(run.provisional.get("rule_years") or [])
            console.print(
                f"[yellow]note:[/yellow] locked with --accept-provisional: judged by a proposed rule-year "
                f"({years}); the acceptance is recorded with the run.",
                soft_wrap=True,
            )
