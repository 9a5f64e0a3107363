"""``caretally export``: a stored run's claim lines as CSV, JSON, X12 837P or FHIR."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from caretally.billing.exporting import FORMATS, ExportRefused, ExportResult, export_month
from caretally.cli.common import DbOption, MonthOption, OrgOption, console, err_console, open_db, refused
from caretally.dates import parse_month
from caretally.errors import ProblemsError
from caretally.export.corrections import load_claim_numbers
from caretally.services.audit import record_cli_access, run_patients
from caretally.settings_practice import load_practice
from caretally.store.db import DEFAULT_ORG


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        month: MonthOption,
        fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")],
        out: Annotated[
            Path,
            typer.Option(
                "--out", help="File to write (x12 for several receivers: one file per receiver beside it)."
            ),
        ],
        practice: Annotated[
            Path | None, typer.Option("--practice", help="Practice identity TOML (needed for x12 and fhir).")
        ] = None,
        run_id: Annotated[
            str | None, typer.Option("--run", help="A specific run (default: the month's current run).")
        ] = None,
        whole_month: Annotated[
            bool,
            typer.Option(
                "--all", help="x12 of an amendment run: every claim as an original, not only the corrections."
            ),
        ] = False,
        claim_numbers: Annotated[
            Path | None,
            typer.Option(
                "--claim-numbers",
                help="CSV claim_id,payer_claim_number: the payer's numbers that corrections reference.",
            ),
        ] = None,
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG,
    ) -> None:
        """Write the month's current run (or --run) in a claim format."""
        parse_month(month)
        if fmt not in FORMATS:
            raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
        engine = open_db(db_url, org)
        try:
            identity = load_practice(practice) if practice else None
            numbers = load_claim_numbers(claim_numbers) if claim_numbers else None
            result = export_month(
                engine,
                org,
                month,
                fmt,
                out,
                practice=identity,
                run_id=run_id,
                whole_month=whole_month,
                claim_numbers=numbers,
            )
        except ProblemsError as exc:
            for p in exc.problems:
                # One line per problem, whatever the terminal width; brackets are TOML, not markup.
                err_console.print(str(p), soft_wrap=True, markup=False, highlight=False)
            raise typer.Exit(2) from None
        except OSError as exc:
            message = f"cannot write {exc.filename or out}: {exc.strerror or exc}"
            err_console.print(message, style="red", soft_wrap=True, markup=False, highlight=False)
            raise typer.Exit(2) from None
        except ExportRefused as exc:
            raise refused(exc) from None
        patients = run_patients(engine, result.run.run_id)
        record_cli_access(
            engine, org, "claims.export", f"runs/{result.run.run_id}/claims", patients, {"format": fmt}
        )
        _report(result, out)


_KIND = {"1": "original", "7": "replacement", "8": "void"}


def _report(result: ExportResult, out: Path) -> None:
    run = result.run
    if run.provisional:
        years = ", ".join(run.provisional.get("rule_years") or [])
        accepted = " (accepted at lock)" if run.provisional_accepted else ""
        console.print(
            f"PROVISIONAL: run {run.run_id} was judged by a proposed rule-year ({years}){accepted}; "
            "the provisional_rules column names it on each line it judged.",
            soft_wrap=True,
            markup=False,
        )
    if not result.files:
        console.print(
            f"{result.lines} lines of run {run.run_id} ({run.status}) written to {out}.",
            soft_wrap=True,
            markup=False,
        )
        return
    what = f"corrections of locked run {result.corrections_of}" if result.corrections_of else "claims"
    console.print(f"{result.lines} lines of run {run.run_id} ({run.status}) written as {what}:")
    for f in result.files:
        counts = ", ".join(f"{n} {_KIND.get(k, k)}" for k, n in f.frequencies.items())
        payers = ", ".join(f"{label} {n}" for label, n in f.payers.items())
        console.print(
            f"  {f.path}  receiver {f.receiver_id}, interchange control number {f.control_number} "
            f"({counts}; claims by payer: {payers})",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
