"""``caretally tokens create | revoke | list``: API tokens for programs (an EHR, a device hub).

``create`` prints the token alone on standard output, so ``TOKEN=$(caretally tokens create …)``
captures it; the reminder that it is shown only once goes to standard error.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from caretally.cli.common import (
    DEFAULT_ORG_ID,
    DbOption,
    JsonOption,
    OrgOption,
    UserError,
    console,
    err_console,
    open_db,
    print_json,
)
from caretally.cli.service_shell import service_errors


def _token_json(t: Any) -> dict[str, Any]:
    return {
        "token_id": t.token_id,
        "org_id": t.org_id,
        "name": t.name,
        "role": t.role,
        "prefix": t.prefix,
        "created_at": t.created_at.isoformat(),
        "created_by": t.created_by,
        "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
        "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
    }


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="API tokens (bearer credentials for programs).", no_args_is_help=True)

    @group.command("create")
    def create(
        role: Annotated[
            str, typer.Option("--role", help="admin, care_staff, biller, auditor or integration.")
        ],
        name: Annotated[str, typer.Option("--name", help="What the token is for, e.g. ehr-feed.")],
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG_ID,
        as_json: JsonOption = False,
    ) -> None:
        """Create a token and print it once; only its SHA-256 digest is stored."""
        from caretally.services import accounts
        from caretally.services.context import cli_actor

        engine = open_db(db_url, DEFAULT_ORG_ID)
        with service_errors():
            made = accounts.create_token(engine, cli_actor(org), name=name, role=role)
        if as_json:
            print_json({**_token_json(made.record), "token": made.secret})
            return
        typer.echo(made.secret)
        err_console.print(
            f"Token {made.record.token_id} '{made.record.name}' ({made.record.role}) for {org}: "
            "shown this once — store it now.",
            markup=False,
            highlight=False,
        )

    @group.command("revoke")
    def revoke(
        token_id: Annotated[int | None, typer.Argument(help="The token's id (see `tokens list`).")] = None,
        name: Annotated[str | None, typer.Option("--name", help="Or the active token's name.")] = None,
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG_ID,
    ) -> None:
        """Revoke a token by id or by name; it stops working at once."""
        from caretally.services import accounts
        from caretally.services.context import cli_actor

        if (token_id is None) == (name is None):
            raise UserError(
                "name the token by id or by --name (one of them)", "see `caretally tokens list`", 2
            )
        engine = open_db(db_url, DEFAULT_ORG_ID)
        with service_errors():
            done = accounts.revoke_token(engine, cli_actor(org), token_id=token_id, name=name)
        console.print(f"Token {done.token_id} '{done.name}' is revoked.", markup=False, highlight=False)

    @group.command("list")
    def list_command(
        db_url: DbOption = None, org: OrgOption = DEFAULT_ORG_ID, as_json: JsonOption = False
    ) -> None:
        """The organization's tokens: prefix, role, last use, revoked or not (never the secret)."""
        from caretally.services import accounts

        tokens = accounts.list_tokens(open_db(db_url, DEFAULT_ORG_ID), org)
        if as_json:
            print_json([_token_json(t) for t in tokens])
            return
        table = Table(title=f"API tokens of {org}")
        for column in ("id", "name", "role", "prefix", "created", "last used", "revoked"):
            table.add_column(column)
        for t in tokens:
            table.add_row(
                str(t.token_id),
                t.name,
                t.role,
                t.prefix + "…",
                f"{t.created_at:%Y-%m-%d %H:%M}",
                f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "—",
                f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "—",
            )
        console.print(table)

    app.add_typer(group, name="tokens")
