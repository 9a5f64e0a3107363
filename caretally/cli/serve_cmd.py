"""``caretally serve``: the HTTP API under uvicorn.

Logging is set up here, not by uvicorn's defaults: uvicorn's access log would print every
path, and paths carry patient ids, so it is off; the application's own access log
(``caretally.api.access``) prints route templates instead.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from caretally.cli.common import DbOption, UserError, err_console


def log_config(level: str) -> dict[str, Any]:
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "caretally": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            # SQL parameters are patient data: the engine logs nothing below a warning, at any level.
            "sqlalchemy": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
    }


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        db_url: DbOption = None,
        host: Annotated[
            str | None,
            typer.Option("--host", help="Address to listen on (default 127.0.0.1, this machine only)."),
        ] = None,
        port: Annotated[int | None, typer.Option("--port", help="TCP port (default 8000).")] = None,
        log_level: Annotated[
            str | None, typer.Option("--log-level", help="critical, error, warning, info or debug.")
        ] = None,
        no_access_log: Annotated[
            bool, typer.Option("--no-access-log", help="Do not log one line per request.")
        ] = False,
        demo: Annotated[
            bool,
            typer.Option(
                "--demo",
                help="Build the demo practice if missing (default ./caretally-demo), "
                "add a user per role (passwords printed once), and serve it.",
            ),
        ] = False,
    ) -> None:
        """Run the HTTP API (OpenAPI at /api/v1/openapi.json, docs at /api/docs).

        Settings also come from CARETALLY_* variables (docs/api.md lists them). On a SQLite
        database without CARETALLY_SECRET_KEY, a secret key is made on first start and
        kept in <database>.secret (mode 0600).
        """
        import uvicorn

        from caretally.api.app import DOCS_URL, create_app
        from caretally.api.settings import SettingsError, load_settings

        users = None
        if demo:
            from caretally.cli.serve_demo import prepare_demo

            db_url, users, _built = prepare_demo(db_url)
        try:
            settings = load_settings(
                database_url=db_url,
                host=host,
                port=port,
                log_level=log_level,
                access_log=False if no_access_log else None,
            )
            application = create_app(settings)
        except SettingsError as exc:
            raise UserError(exc.message, exc.hint, 2) from None
        where = f"http://{settings.host}:{settings.port}"
        database = application.state.database
        err_console.print(
            f"caretally serving {where} (database {database}); API docs at {where}{DOCS_URL}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        if users is not None:
            from caretally.cli.serve_demo import print_users

            print_users(users, where)
        uvicorn.run(
            application,
            host=settings.host,
            port=settings.port,
            log_config=log_config(settings.log_level),
            access_log=False,
            server_header=False,
        )
