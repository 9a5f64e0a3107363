"""``caretally runs list`` / ``runs void ID``: the month runs stored, and voiding a draft."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from caretally.cli.common import (
    DEFAULT_ORG_ID,
    DbOption,
    JsonOption,
    OptionalMonthOption,
    OrgOption,
    console,
    open_db,
    print_json,
    refused,
)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Stored billing runs.", no_args_is_help=True)

    @group.command("list")
    def list_command(
        month: OptionalMonthOption = None,
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG_ID,
        as_json: JsonOption = False,
    ) -> None:
        """Every run, oldest month first: status, lines, patients and what it amends."""
        from caretally.billing.records import list_runs

        runs = list_runs(open_db(db_url, org), org, month)
        if as_json:
            print_json([run.to_json() for run in runs])
            return
        table = Table(title=f"Billing runs of {org}" + (f" for {month}" if month else ""))
        for name in ("run", "month", "status", "created", "locked", "lines", "patients", "amends"):
            table.add_column(name, justify="right" if name in ("lines", "patients") else "left")
        for run in runs:
            table.add_row(
                run.run_id,
                run.month,
                run.status,
                f"{run.created_at:%Y-%m-%d %H:%M}",
                f"{run.locked_at:%Y-%m-%d %H:%M}" if run.locked_at else "—",
                f"{run.lines:,}",
                f"{run.patients:,}",
                run.amends_run_id or "—",
            )
        console.print(table)
        if not runs:
            console.print("No runs stored yet: `caretally bill --month YYYY-MM` makes one.")

    @group.command("void")
    def void_command(
        run_id: Annotated[str, typer.Argument(help="The draft run to void (see `caretally runs list`).")],
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG_ID,
        as_json: JsonOption = False,
    ) -> None:
        """Mark a draft run void so it is never exported; locked and superseded runs are refused."""
        from caretally.billing.records import RecordError, void_run

        try:
            run = void_run(open_db(db_url, org), org, run_id)
        except RecordError as exc:
            raise refused(exc, as_json) from None
        if as_json:
            print_json(run.to_json())
        else:
            console.print(f"Run {run.run_id} ({run.month}) is now void.", markup=False)

    app.add_typer(group, name="runs")
