"""``caretally audit verify [--org ID]``: walk each organization's audit chain.

Exit 0 when every chain is intact, 1 at the first broken link (it is named: the event
number, its row id and what is wrong). The head hash printed for each organization is
worth recording elsewhere now and then: a chain rewritten whole from the start would
still end at a different head.
"""

from __future__ import annotations

from typing import Annotated

import typer

from caretally.cli.common import DEFAULT_ORG_ID, DbOption, JsonOption, UserError, console, open_db, print_json


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The audit trail of PHI access.", no_args_is_help=True)

    @group.command("verify")
    def verify(
        org: Annotated[
            str | None, typer.Option("--org", help="Only this organization (default: every one).")
        ] = None,
        db_url: DbOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Check that no audit event was altered, removed or reordered."""
        from caretally.services.audit import chain_orgs, verify_chain

        engine = open_db(db_url, DEFAULT_ORG_ID)
        orgs = [org] if org else chain_orgs(engine)
        checks = [verify_chain(engine, o) for o in orgs]
        if as_json:
            print_json([c.to_json() for c in checks])
        else:
            if not checks:
                console.print("No audit events recorded yet.")
            for c in checks:
                if c.ok:
                    console.print(
                        f"{c.org_id}: {c.events} event(s), chain intact; head {c.head_seq} {c.head_hash}",
                        markup=False,
                        highlight=False,
                    )
        broken = next((c for c in checks if not c.ok), None)
        if broken is not None:
            where = f"event {broken.broken_at}" if broken.broken_at is not None else "the chain"
            row = f" (row {broken.event_id})" if broken.event_id is not None else ""
            raise UserError(
                f"{broken.org_id}: audit chain broken at {where}{row}: {broken.problem}",
                "the trail was changed outside caretally; keep the database as it is for investigation",
                1,
            )

    app.add_typer(group, name="audit")
