"""Options, parsers, output and error helpers every command shares.

Commands raise (or let escape) ordinary exceptions; ``classify_error`` turns each kind a
user can cause into one line, a hint and an exit status (1 = the input was rejected,
2 = the settings are unusable), so no command needs its own try/except to avoid a
traceback.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from caretally.errors import Refusal

#: Same value as ``caretally.store.db.DEFAULT_ORG``; repeated so importing this module
#: does not import SQLAlchemy and Alembic.
DEFAULT_ORG_ID = "default"

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (default: $CARETALLY_DATABASE_URL or sqlite:///caretally.db)."),
]
OrgOption = Annotated[str, typer.Option("--org", help="Organization (tenant) id.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
CsvOption = Annotated[
    bool, typer.Option("--csv", help="Print CSV (every row, spreadsheet-safe) instead of tables.")
]

#: Width given to a console that is not a terminal: wide enough that no table or line is
#: wrapped, so piped output can be read by a program (or grep) one record per line.
PIPE_WIDTH = 4096


class _PipeConsole(Console):
    """A console for a pipe or file: never wraps, and never stretches a table to its width.

    A table asking to ``expand`` would otherwise be padded out to ``PIPE_WIDTH``
    characters; as wide as its content is what a reader of the file wants.
    """

    def print(self, *objects: Any, **kwargs: Any) -> None:
        from rich.table import Table

        for item in objects:
            if isinstance(item, Table):
                item.expand = False
        super().print(*objects, **kwargs)


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty() or os.environ.get("COLUMNS"):
        return Console(stderr=stderr)
    return _PipeConsole(stderr=stderr, width=PIPE_WIDTH, soft_wrap=True)


console = _console(False)
err_console = _console(True)


class UserError(Exception):
    """A mistake the user can fix: printed as one line plus a hint, never a traceback."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


# -- shared parsers ---------------------------------------------------------------------

_MONTH_RE = re.compile(r"\d{4}-\d{2}")


def parse_month_text(value: str) -> str:
    """``YYYY-MM`` checked as a real month, returned as given; ``BadParameter`` otherwise."""
    text = value.strip()
    if _MONTH_RE.fullmatch(text) and 1 <= int(text[5:]) <= 12 and int(text[:4]) >= 1:
        return text
    raise typer.BadParameter(f"{value!r} is not a month; write it as YYYY-MM, e.g. 2026-03")


def parse_date_text(value: str) -> str:
    """``YYYY-MM-DD`` checked as a real calendar date, returned as given."""
    text = value.strip()
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        try:
            date.fromisoformat(text)
        except ValueError:
            pass
        else:
            return text
    raise typer.BadParameter(f"{value!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-03-31")


def _month_callback(value: str | None) -> str | None:
    return None if value is None else parse_month_text(value)


def date_callback(value: str | None) -> str | None:
    return None if value is None else parse_date_text(value)


#: ``--month YYYY-MM`` (required); a bad month is a usage error (exit 2) naming the option.
MonthOption = Annotated[
    str, typer.Option("--month", help="Calendar month, YYYY-MM.", callback=_month_callback)
]
OptionalMonthOption = Annotated[
    str | None, typer.Option("--month", help="Only this month, YYYY-MM.", callback=_month_callback)
]
#: ``--as-of YYYY-MM-DD`` (required).
AsOfOption = Annotated[
    str, typer.Option("--as-of", help="Date the data is known through, YYYY-MM-DD.", callback=date_callback)
]


# -- databases --------------------------------------------------------------------------


def open_db(db_url: str | None, org: str | None) -> Engine:
    """``store.db.open_database`` for a command: an unusable URL or server is a ``UserError``.

    ``org`` ``None`` for a command about the whole database (``db verify``): no organization
    row is made.
    """
    from caretally.store.db import DatabaseUnavailable, open_database

    try:
        return open_database(db_url, org)
    except DatabaseUnavailable as exc:
        raise UserError(exc.message, exc.hint, 2) from None


def classify_error(exc: BaseException) -> tuple[str, str | None, int]:
    """(one-line message, hint, exit status) for an exception that reached the entry point."""
    from caretally.errors import Refusal
    from caretally.store.db import DatabaseUnavailable, describe_database_error

    if isinstance(exc, UserError):
        return exc.message, exc.hint, exc.exit_code
    if isinstance(exc, Refusal):
        return exc.problem.message, exc.problem.hint, exc.exit_code
    if isinstance(exc, DatabaseUnavailable):
        return exc.message, exc.hint, 2
    if type(exc).__name__ == "MissingParameter":  # caretally.rules.params, not imported for this
        return (
            str(exc.args[0]) if exc.args else "a rule value is missing",
            "add the rule-year as data (caretally/rulesets/) before billing that date.",
            2,
        )
    database = describe_database_error(exc)
    if database is not None:
        return database.message, database.hint, 2
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}", None, 2
    first = _first_line(exc)
    if isinstance(exc, ValueError):  # e.g. dates.parse_month in a command without the shared option
        return first or type(exc).__name__, None, 1
    return (
        f"unexpected {type(exc).__name__}" + (f": {first}" if first else ""),
        "this is a bug; run again with CARETALLY_DEBUG=1 to see the traceback, and report it.",
        2,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


# -- output -----------------------------------------------------------------------------


def print_json(obj: Any) -> None:
    """JSON to stdout, with dates and Decimals as strings, for scripts and tests."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str, sort_keys=False))
    sys.stdout.write("\n")


def write_csv(rows: Iterable[Sequence[Any]], header: Sequence[str], out: IO[str] | None = None) -> int:
    """Every row as CSV through ``safe_cell``; returns the number of data rows written.

    The one place command output and rejects files become CSV, so pointing it at a
    shared spreadsheet-safety helper later changes every writer at once.
    """
    # RFC 4180 line ends: with "\r\n" as the terminator the writer quotes any cell holding
    # a CR or an LF, which a bare "\n" terminator would leave unquoted for a lone CR.
    from caretally.export.csvsafe import safe_cell

    writer = csv.writer(out if out is not None else sys.stdout, lineterminator="\r\n")
    writer.writerow([safe_cell(h) for h in header])
    count = 0
    for row in rows:
        writer.writerow([safe_cell(c) for c in row])
        count += 1
    return count


# -- refusals, waiting and progress ------------------------------------------------------


def refused(exc: Refusal, as_json: bool = False) -> typer.Exit:
    """Show a service's refusal and return the exit to raise: ``raise refused(exc, as_json)``.

    One line and its hint on stderr, as every other error; with ``--json`` the Problem
    JSON (``{"ok": false, "problems": [...]}``) goes to stdout as well, for scripts.
    """
    if as_json:
        print_json(exc.to_json())
    err_console.print(f"caretally: {exc.problem.message}", markup=False, highlight=False, soft_wrap=True)
    if exc.problem.hint:
        err_console.print(f"hint: {exc.problem.hint}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def say_waiting(message: str) -> None:
    """A service is waiting for a lock: say so at once (stderr, even when piped)."""
    err_console.print(f"caretally: {message} …", markup=False, highlight=False, soft_wrap=True)


Progress = Callable[[int, int], None]


@contextmanager
def progress_bar(
    label: str, target: Console | None = None, *, show: bool = True
) -> Iterator[Progress | None]:
    """A bar with patients done / total while long work runs, on a terminal only.

    Yields the ``progress(done, total)`` callback to hand the service, or ``None`` when
    ``target`` (default: stderr) is not a terminal or ``show`` is false (work too short to
    watch): piped output gets nothing drawn and the service skips the counting.
    """
    console = target or err_console
    if not show or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("patients"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
