"""Options and output helpers every command shares."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from caretally.store.db import DEFAULT_ORG

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (default: $CARETALLY_DATABASE_URL or sqlite:///caretally.db)."),
]
OrgOption = Annotated[str, typer.Option("--org", help="Organization (tenant) id.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]

DEFAULT_ORG_ID = DEFAULT_ORG

console = Console()
err_console = Console(stderr=True)


def print_json(obj: Any) -> None:
    """JSON to stdout, with dates and Decimals as strings, for scripts and tests."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str, sort_keys=False))
    sys.stdout.write("\n")
