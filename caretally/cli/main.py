"""Builds the Typer app from one module per command.

Each command module exposes ``register(app)``; keeping them apart keeps each command's
imports (and start-up time) to itself. ``run`` loads only the module of the command
being invoked (all of them for help or an unknown name), because importing the billing
and ingest stacks costs far more than any single command's work on a small database.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

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
    "caretally.cli.runs_cmd",
    "caretally.cli.imports_cmd",
    "caretally.cli.serve_cmd",
    "caretally.cli.orgs_cmd",
    "caretally.cli.users_cmd",
    "caretally.cli.tokens_cmd",
    "caretally.cli.audit_cmd",
    "caretally.cli.packet_cmd",
    "caretally.cli.worker_cmd",
    "caretally.cli.scan_cmd",
)

#: Top-level command name → the module that registers it (``tests/cli`` checks this
#: against what each module really registers, so a new command cannot be forgotten).
COMMAND_NAMES: dict[str, str] = {
    "db": "caretally.cli.db_cmd",
    "import": "caretally.cli.import_cmd",
    "synth": "caretally.cli.synth_cmd",
    "demo": "caretally.cli.demo_cmd",
    "explain": "caretally.cli.explain_cmd",
    "bill": "caretally.cli.bill_cmd",
    "lock": "caretally.cli.bill_cmd",
    "export": "caretally.cli.export_cmd",
    "rules": "caretally.cli.rules_cmd",
    "worklist": "caretally.cli.worklist_cmd",
    "leakage": "caretally.cli.leakage_cmd",
    "runs": "caretally.cli.runs_cmd",
    "imports": "caretally.cli.imports_cmd",
    "serve": "caretally.cli.serve_cmd",
    "orgs": "caretally.cli.orgs_cmd",
    "users": "caretally.cli.users_cmd",
    "tokens": "caretally.cli.tokens_cmd",
    "audit": "caretally.cli.audit_cmd",
    "packet": "caretally.cli.packet_cmd",
    "worker": "caretally.cli.worker_cmd",
    "scan": "caretally.cli.scan_cmd",
}

DEBUG_ENV = "CARETALLY_DEBUG"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"caretally {__version__}")
        raise typer.Exit()


def modules_for(argv: Sequence[str]) -> tuple[str, ...]:
    """The command modules a command line needs: one for a known command, none for a bare
    ``--version``, every module otherwise (help must list them all)."""
    words = [a for a in argv if not a.startswith("-")]
    if words and words[0] in COMMAND_NAMES:
        return (COMMAND_NAMES[words[0]],)
    if not words and "--version" in argv and "--help" not in argv:
        return ()
    return COMMAND_MODULES


def build_app(modules: Sequence[str] = COMMAND_MODULES) -> typer.Typer:
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

    for name in dict.fromkeys(modules):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not written yet
                continue
            raise
        module.register(app)
    return app


def _fail(message: str, hint: str | None, code: int) -> SystemExit:
    typer.echo(f"caretally: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    return SystemExit(code)


def run(argv: Sequence[str] | None = None) -> None:
    """Entry point: every expected failure prints one clear line (and a hint), never a traceback.

    Exit 1 = the input was rejected, exit 2 = the settings (URL, options, files) are
    unusable. Anything unforeseen is still one line, with the way to see the traceback,
    because a user facing a stack dump cannot tell a bad argument from a bug.
    """
    from typer.main import get_command

    try:  # Typer ≥ 0.20 carries its own copy of Click
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover - older Typer on the Click package
        from click import exceptions as click_errors  # type: ignore[no-redef]
    no_args_help = getattr(click_errors, "NoArgsIsHelpError", ())

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # Not standalone: Click's own usage errors come back here to be printed as one line
        # instead of a framed panel.
        status = get_command(build_app(modules_for(args))).main(
            args=args, prog_name="caretally", standalone_mode=False
        )
    except no_args_help as exc:
        exc.show()  # the help text itself
        raise SystemExit(exc.exit_code) from None
    except click_errors.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "caretally"
        raise _fail(exc.format_message(), f"see '{path} --help'", exc.exit_code) from None
    except click_errors.ClickException as exc:
        raise _fail(exc.format_message(), None, exc.exit_code) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", None, 130) from None
    except Exception as exc:
        # Imported only on failure, so `caretally --version` pays for none of it.
        from caretally.cli.common import classify_error
        from caretally.errors import ProblemsError

        if isinstance(exc, ProblemsError):
            for problem in exc.problems:
                typer.echo(str(problem), err=True)
            raise SystemExit(2) from None
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        message, hint, code = classify_error(exc)
        raise _fail(message, hint, code) from None
    if isinstance(status, int) and status:
        raise SystemExit(status)


if __name__ == "__main__":
    run()
