"""``caretally imports list``: the import batches stored, newest first."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from caretally.cli.common import DEFAULT_ORG_ID, DbOption, JsonOption, OrgOption, console, open_db, print_json

OUTCOMES = ("read", "inserted", "updated", "unchanged", "rejected", "deleted")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Stored import batches.", no_args_is_help=True)

    @group.command("list")
    def list_command(
        limit: Annotated[int, typer.Option("--limit", min=1, help="Newest batches to show.")] = 50,
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG_ID,
        as_json: JsonOption = False,
    ) -> None:
        """Each stored import: when, from where, and its row counts summed over files."""
        from caretally.billing.records import list_imports

        batches = list_imports(open_db(db_url, org), org, limit)
        if as_json:
            print_json([batch.to_json() for batch in batches])
            return
        table = Table(title=f"Imports of {org} (newest first)")
        for name in ("batch", "started", "source", *OUTCOMES):
            table.add_column(name, justify="right" if name in OUTCOMES else "left")
        for batch in batches:
            table.add_row(
                batch.batch_id,
                f"{batch.started_at:%Y-%m-%d %H:%M}",
                batch.source,
                *(f"{batch.total(o):,}" for o in OUTCOMES),
            )
        console.print(table)
        if not batches:
            console.print("No imports stored yet: `caretally import DIR` makes one.")

    app.add_typer(group, name="imports")
