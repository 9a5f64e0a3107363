"""``caretally users add | deactivate | list``: the people who sign in to the service."""

from __future__ import annotations

import sys
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
    open_db,
    print_json,
)
from caretally.cli.service_shell import service_errors

ROLES = "admin, care_staff, biller, auditor or integration"


def _password(from_stdin: bool) -> str:
    """The password from standard input (one line), or typed twice at a terminal."""
    if from_stdin:
        text = sys.stdin.read()
        password = text.splitlines()[0] if text else ""
        if not password:
            raise UserError(
                "no password on standard input", "pipe it in: printf '%s' \"$PW\" | caretally users add …"
            )
        return password
    if sys.stdin.isatty():
        return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))
    raise UserError("give the password on standard input with --password-stdin", None, 2)


def _user_json(u: Any) -> dict[str, Any]:
    return {
        "user_id": u.user_id,
        "org_id": u.org_id,
        "email": u.email,
        "display_name": u.display_name,
        "role": u.role,
        "active": u.active,
        "created_at": u.created_at.isoformat(),
        "last_signin_at": u.last_signin_at.isoformat() if u.last_signin_at else None,
    }


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Users who sign in (email and password).", no_args_is_help=True)

    @group.command("add")
    def add(
        email: Annotated[str, typer.Option("--email", help="Their email; it is how they sign in.")],
        role: Annotated[str, typer.Option("--role", help=f"One of {ROLES}.")],
        password_stdin: Annotated[
            bool, typer.Option("--password-stdin", help="Read the password (first line) from standard input.")
        ] = False,
        name: Annotated[
            str | None, typer.Option("--name", help="Display name (default: from the email).")
        ] = None,
        practitioner: Annotated[
            str | None,
            typer.Option(
                "--practitioner",
                help="The practitioner id this user logs time as (care staff need one to save time).",
            ),
        ] = None,
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG_ID,
        as_json: JsonOption = False,
    ) -> None:
        """Add a user to an organization; the password needs at least 15 characters.

        With ``--practitioner`` the user is linked at once, so a nurse can log time
        without waiting for an admin to link them on the web Admin page.
        """
        from caretally.services import accounts, care
        from caretally.services.context import cli_actor

        password = _password(password_stdin)
        engine = open_db(db_url, DEFAULT_ORG_ID)
        actor = cli_actor(org)
        if practitioner is not None and practitioner not in dict(care.practitioner_choices(engine, org)):
            # checked first, so a typo does not leave a user behind without the link
            raise UserError(
                f"there is no practitioner {practitioner} in organization {org}",
                "the ids come from the imported practitioners (caretally import); no user was added",
            )
        with service_errors():
            user = accounts.add_user(
                engine, actor, email=email, password=password, role=role, display_name=name
            )
            if practitioner is not None:
                care.link_practitioner(engine, actor, user.user_id, practitioner)
        if as_json:
            print_json({**_user_json(user), "practitioner_id": practitioner})
        else:
            linked = f", logging time as {practitioner}" if practitioner else ""
            console.print(
                f"User {user.user_id} ({user.email}) added to {user.org_id} as {user.role}{linked}.",
                markup=False,
                highlight=False,
            )
            if practitioner is None and user.role == "care_staff":
                typer.echo(
                    "note: not linked to a practitioner, so they cannot save time until an admin links"
                    " them on the web Admin page (or add them with --practitioner ID).",
                    err=True,
                )

    @group.command("deactivate")
    def deactivate(
        email: Annotated[str, typer.Option("--email", help="The user's email.")],
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG_ID,
    ) -> None:
        """Stop a user from signing in; their open sessions end at once."""
        from caretally.services import accounts
        from caretally.services.context import cli_actor

        engine = open_db(db_url, DEFAULT_ORG_ID)
        with service_errors():
            user = accounts.deactivate_user(engine, cli_actor(org), email)
        console.print(f"User {user.user_id} ({user.email}) is now inactive.", markup=False, highlight=False)

    @group.command("list")
    def list_command(
        db_url: DbOption = None, org: OrgOption = DEFAULT_ORG_ID, as_json: JsonOption = False
    ) -> None:
        """The organization's users, with role and state."""
        from caretally.services import accounts

        users = accounts.list_users(open_db(db_url, DEFAULT_ORG_ID), org)
        if as_json:
            print_json([_user_json(u) for u in users])
            return
        table = Table(title=f"Users of {org}")
        for column in ("id", "email", "name", "role", "active", "last sign-in"):
            table.add_column(column)
        for u in users:
            last = f"{u.last_signin_at:%Y-%m-%d %H:%M}" if u.last_signin_at else "—"
            table.add_row(str(u.user_id), u.email, u.display_name, u.role, "yes" if u.active else "no", last)
        console.print(table)

    app.add_typer(group, name="users")
