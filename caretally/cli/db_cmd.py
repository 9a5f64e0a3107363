"""``caretally db upgrade`` / ``db current`` / ``db verify``: migrations, and the stored runs' integrity."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from caretally.cli.common import DbOption, JsonOption, console, err_console, open_db, print_json
from caretally.store import db

if TYPE_CHECKING:
    from caretally.billing.integrity import VerifyReport


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Database schema migrations.", no_args_is_help=True)

    @group.command("upgrade")
    def upgrade(db_url: DbOption = None) -> None:
        """Apply every pending migration (also done automatically on first use)."""
        engine = db.make_engine(db_url)
        before, after = db.upgrade(engine)
        if before == after:
            console.print(f"Schema already at {after}.")
        else:
            console.print(f"Schema upgraded from {before or 'empty'} to {after}.")

    @group.command("current")
    def current(db_url: DbOption = None) -> None:
        """Show the schema revision the database is at, and the newest one available."""
        engine = db.make_engine(db_url)
        console.print(f"current: {db.current_revision(engine) or 'empty'}  head: {db.head_revision(engine)}")

    @group.command("verify")
    def verify(
        db_url: DbOption = None,
        org: Annotated[
            str | None, typer.Option("--org", help="Only this organization's runs (default: every run).")
        ] = None,
        as_json: JsonOption = False,
    ) -> None:
        """Recompute every stored run's digests (lines, decisions, input) and check the database.

        Lists each run whose stored content no longer matches a digest it stored; runs stored
        before decisions digests are "not verifiable" on that digest, not tampered. Exit 1
        when anything does not match or the database check finds a fault.
        """
        from caretally.billing.integrity import verify_database

        report = verify_database(open_db(db_url, None), org)
        if as_json:
            print_json(report.to_json())
        else:
            _render_verify(report)
        if not report.ok:
            raise typer.Exit(1)

    app.add_typer(group, name="db")


def _render_verify(report: VerifyReport) -> None:
    from caretally.billing.integrity import NOT_VERIFIABLE_REASON

    bad = [run for run in report.runs if not run.ok]
    for problem in report.problems:
        err_console.print(f"caretally: {problem.message}", markup=False, highlight=False, soft_wrap=True)
    for run, name in report.not_verifiable:
        console.print(
            f"run {run.run_id} ({run.org_id}, {run.month}, {run.status}): {name} digest "
            f"{NOT_VERIFIABLE_REASON}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    unverifiable = len({run.run_id for run, _ in report.not_verifiable})
    console.print(
        f"{len(report.runs)} stored run(s) checked (lines, decisions and input digests): "
        f"{len(report.runs) - len(bad)} match, {len(bad)} do not"
        + (f"; {unverifiable} stored before decisions digests" if unverifiable else "")
        + ".",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    state = "ok" if not report.database_findings else f"{len(report.database_findings)} finding(s)"
    console.print(f"{report.database_check}: {state}.", markup=False, highlight=False, soft_wrap=True)
    if not report.ok:
        err_console.print(
            "hint: a stored run is never edited; restore the database (or the runs named) from a backup",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
