"""``caretally export``: a stored run's claim lines as CSV, JSON, X12 837P or FHIR."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caretally.billing.exporting import FORMATS, ExportRefused, export_month
from caretally.cli.common import DbOption, OrgOption, console, err_console
from caretally.dates import parse_month
from caretally.errors import ProblemsError
from caretally.settings_practice import load_practice
from caretally.store.db import DEFAULT_ORG, open_database


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        month: Annotated[str, typer.Option("--month", help="Billed month, YYYY-MM.")],
        fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")],
        out: Annotated[Path, typer.Option("--out", help="File to write.")],
        practice: Annotated[
            Path | None, typer.Option("--practice", help="Practice identity TOML (needed for x12 and fhir).")
        ] = None,
        run_id: Annotated[
            str | None, typer.Option("--run", help="A specific run (default: the month's current run).")
        ] = None,
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG,
    ) -> None:
        """Write the month's current run (or --run) in a claim format."""
        parse_month(month)
        if fmt not in FORMATS:
            raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
        engine = open_database(db_url, org)
        try:
            identity = load_practice(practice) if practice else None
            result = export_month(engine, org, month, fmt, out, practice=identity, run_id=run_id)
        except ProblemsError as exc:
            for p in exc.problems:
                err_console.print(str(p))
            raise typer.Exit(2) from None
        except ExportRefused as exc:
            err_console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        extra = f", interchange control number {result.control_number}" if result.control_number else ""
        run = result.run
        console.print(f"{result.lines} lines of run {run.run_id} ({run.status}) written to {out}{extra}.")
