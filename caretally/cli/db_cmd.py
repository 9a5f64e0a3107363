"""``caretally db upgrade`` / ``db current``: explicit control over migrations."""

from __future__ import annotations

import typer

from caretally.cli.common import DbOption, console
from caretally.store import db


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

    app.add_typer(group, name="db")
