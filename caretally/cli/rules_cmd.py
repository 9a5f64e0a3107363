"""``caretally rules check`` / ``rules show``: review the rule-years without running a month."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from caretally.cli.common import JsonOption, console, err_console, print_json
from caretally.rules.loader import check_rulesets, load_rulebook


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Inspect and check the rule-years.", no_args_is_help=True)

    @group.command("check")
    def check(
        root: Annotated[
            Path | None, typer.Option("--root", help="A rulesets folder (default: the shipped one).")
        ] = None,
        as_json: JsonOption = False,
    ) -> None:
        """Load every rule file strictly; list every problem with file and line. Exit 1 on any."""
        problems = check_rulesets(root)
        if as_json:
            print_json([p.to_json() for p in problems])
        else:
            for p in problems:
                err_console.print(str(p))
            if not problems:
                console.print("All rule files load with no problems.")
        if problems:
            raise typer.Exit(1)

    @group.command("show")
    def show(
        on: Annotated[
            str, typer.Option("--date", help="Show the rule-year in force on this date (YYYY-MM-DD).")
        ],
        overlay: Annotated[str | None, typer.Option("--payer-rules", help="Payer overlay name.")] = None,
    ) -> None:
        """Every code of the rule-year in force on a date, with thresholds, amounts and sources."""
        year = load_rulebook("medicare", overlay=overlay).for_date(date.fromisoformat(on))
        table = Table(title=f"{year.payer} {year.year} ({' + '.join(year.layers)})", show_lines=False)
        for column in ("code", "family", "program", "key values", "amount"):
            table.add_column(column)
        for code, rule in sorted(year.codes.items()):
            keys = [
                f"{name}={rule.params[name].value}"
                for name in ("min_days", "max_days", "min_minutes", "max_minutes", "max_units", "add_on_to")
                if name in rule.params and rule.params[name].value is not None
            ]
            amount = "—" if rule.amount is None else f"${rule.amount}"
            table.add_row(code, rule.family, rule.program.value, ", ".join(keys), amount)
        console.print(table)

    app.add_typer(group, name="rules")
