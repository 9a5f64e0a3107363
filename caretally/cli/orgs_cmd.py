"""``caretally orgs add ID --name NAME`` / ``orgs list``: the tenants of a database."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from caretally.cli.common import DEFAULT_ORG_ID, DbOption, JsonOption, console, open_db, print_json
from caretally.cli.service_shell import service_errors


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Organizations (tenants).", no_args_is_help=True)

    @group.command("add")
    def add(
        org_id: Annotated[str, typer.Argument(help="The new organization's id (letters, digits, . _ -).")],
        name: Annotated[str, typer.Option("--name", help="Its name, as people call it.")],
        db_url: DbOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Add an organization; its users, tokens and data are kept apart from every other's."""
        from caretally.services import accounts

        engine = open_db(db_url, DEFAULT_ORG_ID)
        with service_errors():
            org = accounts.add_org(engine, org_id, name)
        if as_json:
            print_json({"org_id": org.org_id, "name": org.name, "created_at": org.created_at.isoformat()})
        else:
            console.print(f"Organization {org.org_id} ({org.name}) added.", markup=False, highlight=False)

    @group.command("list")
    def list_command(db_url: DbOption = None, as_json: JsonOption = False) -> None:
        """Every organization in the database."""
        from caretally.services import accounts

        orgs = accounts.list_orgs(open_db(db_url, DEFAULT_ORG_ID))
        if as_json:
            print_json(
                [{"org_id": o.org_id, "name": o.name, "created_at": o.created_at.isoformat()} for o in orgs]
            )
            return
        table = Table(title="Organizations")
        for column in ("id", "name", "created"):
            table.add_column(column)
        for o in orgs:
            table.add_row(o.org_id, o.name, f"{o.created_at:%Y-%m-%d %H:%M}")
        console.print(table)

    @group.command("set-webhook-secret")
    def set_webhook_secret(
        org_id: Annotated[str, typer.Argument(help="The organization the webhook delivers for.")],
        from_stdin: Annotated[
            bool,
            typer.Option("--stdin", help="Read the secret from standard input (else one is made)."),
        ] = False,
        source: Annotated[str, typer.Option("--source", help="The webhook: tenovi.")] = "tenovi",
        db_url: DbOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Set the shared secret a device webhook sends in X-Webhook-Secret; it names the organization.

        Without --stdin a random secret is made and printed once; paste it into the vendor's
        webhook settings. Only its digest is stored; setting a new one retires the old.
        """
        import sys

        from caretally.cli.common import UserError
        from caretally.services import ingest
        from caretally.services.context import cli_actor

        secret: str | None = None
        if from_stdin:
            lines = sys.stdin.read().splitlines()
            secret = lines[0].strip() if lines else ""
            if not secret:
                raise UserError("standard input held no secret", "pipe it in, or leave out --stdin", 2)
        engine = open_db(db_url, DEFAULT_ORG_ID)
        with service_errors():
            done = ingest.set_webhook_secret(engine, cli_actor(org_id), source, secret)
        if as_json:
            body = {"org_id": done.org_id, "source": done.source, "replaced": done.replaced}
            print_json(body if from_stdin else {**body, "secret": done.secret})
        elif from_stdin:
            verb = "replaced" if done.replaced else "set"
            line = f"The {source} webhook secret of {org_id} is {verb}."
            console.print(line, markup=False, highlight=False)
        else:
            print(done.secret)

    app.add_typer(group, name="orgs")
