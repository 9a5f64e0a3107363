"""``caretally worklist``: the caseload ranked by what can still be billed this period."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from caretally.cli.billing_options import PayerRulesOption, parse_overlays
from caretally.cli.common import (
    DEFAULT_ORG_ID,
    AsOfOption,
    CsvOption,
    DbOption,
    JsonOption,
    OrgOption,
    UserError,
    console,
    open_db,
    print_json,
    progress_bar,
    write_csv,
)
from caretally.model import Program

if TYPE_CHECKING:
    from caretally.worklist import WorklistRow

CSV_HEADER = (
    "patient_id",
    "program",
    "enrollment_id",
    "period_start",
    "period_end",
    "days_so_far",
    "days_left",
    "minutes_so_far",
    "interactive_done",
    "value_at_stake",
    "value_per_minute",
    "next_step",
)


def csv_row(r: WorklistRow) -> list[object]:
    return [
        r.patient_id,
        r.program.value,
        r.enrollment_id,
        r.period.start,
        r.period.end,
        r.days_so_far,
        r.days_left,
        r.minutes_so_far,
        r.interactive_done,
        r.value_at_stake,
        r.value_per_minute,
        r.action,
    ]


def register(app: typer.Typer) -> None:
    @app.command("worklist")
    def worklist(
        as_of: AsOfOption,
        program: Annotated[
            str | None, typer.Option("--program", help="Only this program (RPM, RTM, CCM, PCM).")
        ] = None,
        limit: Annotated[int, typer.Option("--limit", help="Rows to show in the table (JSON has all).")] = 40,
        all_rows: Annotated[
            bool, typer.Option("--all", help="Include periods with nothing left to gain.")
        ] = False,
        payer_rules: PayerRulesOption = None,
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG_ID,
        as_json: JsonOption = False,
        as_csv: CsvOption = False,
    ) -> None:
        """Who is short of days, minutes or the live call: ranked by value per staff minute, then deadline."""
        day = date.fromisoformat(as_of)
        if as_json and as_csv:
            raise UserError("--json and --csv cannot be combined", "choose one output format", 2)
        known = {p.value for p in Program}
        if program and program.upper() not in known:
            raise UserError(f"--program {program!r} is not one of {', '.join(sorted(known))}", None, 2)
        chosen = Program(program.upper()) if program else None
        # The billing stack is imported here so `worklist --help` and usage errors stay fast.
        from caretally.billing.payers import PayerRules
        from caretally.worklist import build_worklist

        engine = open_db(db_url, org)
        rules = PayerRules.load(parse_overlays(payer_rules))
        # A bar on a terminal only: a large caseload takes a while, and pipes want no noise.
        with progress_bar(f"worklist as of {as_of}") as progress:
            rows = build_worklist(engine, org, day, rules, program=chosen, progress=progress)
        from caretally.services.audit import record_cli_access

        record_cli_access(
            engine, org, "worklist.read", "worklist", {r.patient_id for r in rows}, {"as_of": as_of}
        )
        if not all_rows:
            rows = [r for r in rows if r.next_step is not None] if not as_json else rows
        if as_json:
            print_json({"as_of": as_of, "rows": [r.to_json() for r in rows]})
            return
        if as_csv:
            write_csv((csv_row(r) for r in rows), CSV_HEADER)
            return
        total = sum((r.value_at_stake for r in rows), start=0)
        table = Table(
            title=f"Worklist as of {as_of} — {len(rows)} open periods, ${total:,.2f} still reachable"
        )
        for col in (
            "patient",
            "program",
            "period ends",
            "days",
            "minutes",
            "call",
            "at stake",
            "$/min",
            "next step",
        ):
            table.add_column(col, overflow="fold")
        for r in rows[:limit]:
            days = "—" if r.days_so_far is None else f"{r.days_so_far} ({r.days_left} left)"
            minutes = "—" if r.minutes_so_far is None else str(r.minutes_so_far)
            call = {True: "yes", False: "[red]no[/red]", None: "—"}[r.interactive_done]
            table.add_row(
                r.patient_id,
                r.program.value,
                str(r.period.end),
                days,
                minutes,
                call,
                f"${r.value_at_stake:,.2f}",
                f"{r.value_per_minute}",
                r.action,
            )
        console.print(table)
        if len(rows) > limit:
            console.print(f"… {len(rows) - limit} more; use --limit or --json.")
