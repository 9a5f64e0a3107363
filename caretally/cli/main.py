"""Builds the Typer app from one module per command.

Each command module exposes ``register(app)``; keeping them apart keeps each command's
imports (and start-up time) to itself.
"""

from __future__ import annotations

import importlib

import typer

from caretally import __version__

COMMAND_MODULES = (
    "caretally.cli.db_cmd",
    "caretally.cli.import_cmd",
    "caretally.cli.synth_cmd",
    "caretally.cli.demo_cmd",
    "caretally.cli.explain_cmd",
    "caretally.cli.bill_cmd",
    "caretally.cli.export_cmd",
    "caretally.cli.rules_cmd",
    "caretally.cli.worklist_cmd",
    "caretally.cli.leakage_cmd",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"caretally {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="caretally",
        help="Remote-monitoring data and care-management time in, audit-ready claims out.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Show version."
        ),
    ) -> None:
        """caretally command line."""

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not written yet
                continue
            raise
        module.register(app)
    return app


def run() -> None:
    """Entry point: expected failures print one clear line (exit 2), never a traceback."""
    from caretally.errors import ProblemsError
    from caretally.rules.params import MissingParameter

    try:
        build_app()(standalone_mode=True)
    except MissingParameter as exc:
        typer.echo(f"caretally: {exc.args[0]}", err=True)
        typer.echo(
            "caretally: add the rule-year as data (caretally/rulesets/) before billing that date.", err=True
        )
        raise SystemExit(2) from None
    except ProblemsError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise SystemExit(2) from None
