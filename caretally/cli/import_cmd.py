"""``caretally import DIR``: validate and store a practice's bundle.

Problems go to stderr as ``file:line: field: message`` (one per line) and the counts
table to stdout, so ``2>problems.txt`` captures exactly the faults; ``--json`` prints a
single JSON object on stdout instead. The exit status is 1 whenever anything was
rejected, whether or not the rest was stored.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from caretally.cli.common import DbOption, JsonOption, OrgOption, console, err_console, print_json
from caretally.ingest import ImportReport, import_bundle
from caretally.store.db import DEFAULT_ORG, open_database

#: Beyond this many problems the text output summarises; --json always lists them all.
MAX_PRINTED = 200


def _counts_table(report: ImportReport) -> Table:
    table = Table(title=f"Import of {report.source}")
    for name in ("file", "read", "inserted", "unchanged", "updated", "rejected"):
        table.add_column(name, justify="left" if name == "file" else "right")
    for stem, c in report.counts.items():
        table.add_row(stem, *(f"{n:,}" for n in (c.read, c.inserted, c.unchanged, c.updated, c.rejected)))
    return table


def _verdict(report: ImportReport) -> str:
    rejected = sum(c.rejected for c in report.counts.values())
    if not report.stored:
        return f"Nothing stored: {len(report.problems)} problem(s). Fix them, or use --skip-invalid."
    if not report.ok():
        written = ", ".join(str(p) for p in report.rejects_written) or "nowhere"
        return f"Stored the valid rows; {rejected} row(s) rejected (rejects written to {written})."
    if not report.changed:
        return "Nothing changed: every record was already stored."
    return "Imported."


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_command(
        source: Annotated[Path, typer.Argument(help="Bundle folder (CSV, JSON Lines or bundle.json).")],
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG,
        as_json: JsonOption = False,
        skip_invalid: Annotated[
            bool,
            typer.Option("--skip-invalid", help="Store the valid rows and write the rejected ones aside."),
        ] = False,
        rejects: Annotated[
            Path | None,
            typer.Option("--rejects", help="Folder for <file>.rejects.csv (default: <bundle>/rejects)."),
        ] = None,
    ) -> None:
        """Validate a bundle and store it; all-or-nothing unless --skip-invalid."""
        engine = open_database(db_url, org)
        report = import_bundle(
            engine,
            org,
            source,
            skip_invalid=skip_invalid,
            rejects_path=rejects,
            progress=not as_json and sys.stderr.isatty(),
        )
        if as_json:
            print_json(report.to_json())
        else:
            for problem in report.problems[:MAX_PRINTED]:
                err_console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
            if len(report.problems) > MAX_PRINTED:
                more = len(report.problems) - MAX_PRINTED
                err_console.print(f"… and {more} more problem(s); use --json for all of them.", markup=False)
            console.print(_counts_table(report))
            console.print(_verdict(report), markup=False)
        if not report.ok():
            raise typer.Exit(1)
