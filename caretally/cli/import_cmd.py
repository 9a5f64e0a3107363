"""``caretally import DIR``: validate and store a practice's bundle.

Problems go to stderr as ``file:line: field: message`` (one per line) and the counts
table to stdout, so ``2>problems.txt`` captures exactly the faults; ``--json`` prints a
single JSON object on stdout instead. The exit status is 1 whenever anything was
rejected, whether or not the rest was stored; warnings (printed as
``file:line: field: warning: message``) never change it.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from caretally.cli.common import (
    DEFAULT_ORG_ID,
    DbOption,
    JsonOption,
    OrgOption,
    console,
    err_console,
    open_db,
    print_json,
    say_waiting,
)

if TYPE_CHECKING:
    from caretally.ingest import ImportReport

#: ``ingest.pipeline.DEFAULT_CLOCK_SKEW`` in hours, repeated so `import --help` does not
#: load the ingest stack (a test holds the two equal).
DEFAULT_SKEW_HOURS = 24.0

#: Beyond this many problems the text output summarises; --json always lists them all.
MAX_PRINTED = 200


def _counts_table(report: ImportReport) -> Table:
    table = Table(title=f"Import of {report.source}")
    deletes = "retractions" in report.counts
    names = ("file", "read", "inserted", "unchanged", "updated", "rejected") + (
        ("deleted",) if deletes else ()
    )
    for name in names:
        table.add_column(name, justify="left" if name == "file" else "right")
    for stem, c in report.counts.items():
        cells = [c.read, c.inserted, c.unchanged, c.updated, c.rejected] + ([c.deleted] if deletes else [])
        table.add_row(stem, *(f"{n:,}" for n in cells))
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
    if report.warnings:
        return f"Imported, with {len(report.warnings)} warning(s)."
    return "Imported."


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_command(
        source: Annotated[Path, typer.Argument(help="Bundle folder (CSV, JSON Lines or bundle.json).")],
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG_ID,
        as_json: JsonOption = False,
        skip_invalid: Annotated[
            bool,
            typer.Option("--skip-invalid", help="Store the valid rows and write the rejected ones aside."),
        ] = False,
        rejects: Annotated[
            Path | None,
            typer.Option("--rejects", help="Folder for <file>.rejects.csv (default: <bundle>/rejects)."),
        ] = None,
        ignore_unknown_files: Annotated[
            bool,
            typer.Option(
                "--ignore-unknown-files",
                help="Read the known files and warn about the others (default: an unknown file is an error).",
            ),
        ] = False,
        max_clock_skew: Annotated[
            float,
            typer.Option(
                "--max-clock-skew",
                min=0,
                help="Hours a reading may lie in the future of this computer's clock before it is rejected.",
            ),
        ] = DEFAULT_SKEW_HOURS,
    ) -> None:
        """Validate a bundle and store it; all-or-nothing unless --skip-invalid."""
        from caretally.ingest import import_bundle

        engine = open_db(db_url, org)
        report = import_bundle(
            engine,
            org,
            source,
            skip_invalid=skip_invalid,
            rejects_path=rejects,
            progress=not as_json and sys.stderr.isatty(),
            ignore_unknown_files=ignore_unknown_files,
            now=datetime.now(UTC),
            max_clock_skew=timedelta(hours=max_clock_skew),
            on_wait=say_waiting,
        )
        if as_json:
            print_json(report.to_json())
        else:
            for warning in report.warnings[:MAX_PRINTED]:
                shown = str(replace(warning, message=f"warning: {warning.message}"))
                err_console.print(shown, markup=False, highlight=False, soft_wrap=True)
            if len(report.warnings) > MAX_PRINTED:
                more = len(report.warnings) - MAX_PRINTED
                err_console.print(f"… and {more} more warning(s); use --json for all of them.", markup=False)
            for problem in report.problems[:MAX_PRINTED]:
                err_console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
            if len(report.problems) > MAX_PRINTED:
                more = len(report.problems) - MAX_PRINTED
                err_console.print(f"… and {more} more problem(s); use --json for all of them.", markup=False)
            console.print(_counts_table(report))
            console.print(_verdict(report), markup=False)
        if not report.ok():
            raise typer.Exit(1)
