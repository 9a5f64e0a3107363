"""The FastAPI application, built by ``create_app(settings)`` and nothing at import time.

``caretally serve`` runs it under uvicorn; tests build one per database. Building the app
opens the database (migrating it to head), settles the secret key and wires the routes;
every later request reads that state from ``app.state.service``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, FastAPI

from caretally import __version__
from caretally.api import problems
from caretally.api.deps import Service
from caretally.api.middleware import ServiceMiddleware
from caretally.api.routes import admin, audit, auth, compliance, health, imports, months, patients, runs
from caretally.api.routes import ingest as ingest_routes
from caretally.api.routes import jobs as month_close
from caretally.api.settings import Settings, SettingsError, resolve_secret
from caretally.services.accounts import SessionPolicy
from caretally.services.imports import UnpackLimits
from caretally.store.db import DatabaseUnavailable, open_database, resolve_url, shown_url
from caretally.web.app import mount_web

API_PREFIX = "/api/v1"
OPENAPI_URL = f"{API_PREFIX}/openapi.json"
DOCS_URL = "/api/docs"

DESCRIPTION = """\
Remote-monitoring data and care-management time in, audit-ready claims out.

Every route except `/healthz` and `POST /api/v1/auth/token` needs a bearer credential: an API
token (`caretally tokens create`) or a session token from `POST /api/v1/auth/token`. The
organization always comes from the credential. Errors are RFC 9457 problem details. Every
read or write of PHI is recorded in the audit trail. See docs/api.md.
"""


def _problem_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI lists a response model under application/json too; error answers are only
    ever application/problem+json, so the document says exactly that."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    for status, answer in operation.get("responses", {}).items():
                        content = answer.get("content", {})
                        if status[:1] in "45" and problems.MEDIA_TYPE in content:
                            content.pop("application/json", None)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def _job_queue(settings: Settings, url: str, engine: Any) -> Any:
    """The month-close job queue (``caretally.jobs``); an unreachable one is a settings error."""
    from caretally.jobs.queue import JobQueue, QueueUnavailable, make_huey

    try:
        huey = make_huey(url, redis_url=settings.redis_url, queue_file=settings.queue_file)
    except QueueUnavailable as exc:
        raise SettingsError(exc.message, exc.hint) from None
    return JobQueue(huey, engine, heartbeat=settings.job_heartbeat_seconds, range_size=settings.range_size)


def _background_consumer(settings: Settings, queue: Any) -> Any:
    """On the embedded default (no Redis), the server runs one consumer thread itself, so
    month runs started over HTTP finish without a ``caretally worker``; with Redis the
    deployment runs workers (``CARETALLY_IN_PROCESS_WORKER`` decides either way)."""
    from caretally.jobs.queue import BackgroundConsumer

    wanted = settings.in_process_worker
    if wanted is None:
        wanted = not settings.redis_url
    if not wanted:
        return None
    consumer = BackgroundConsumer(queue)
    consumer.start()
    return consumer


def create_app(settings: Settings) -> FastAPI:
    """The application for ``settings``; raises ``SettingsError`` for anything unusable."""
    url = resolve_url(settings.database_url)
    try:
        engine = open_database(url)
    except DatabaseUnavailable as exc:
        raise SettingsError(exc.message, exc.hint) from None
    secret = resolve_secret(settings, url)
    queue = _job_queue(settings, url, engine)
    service = Service(
        engine=engine,
        settings=settings,
        policy=SessionPolicy(
            secret_key=secret,
            idle_timeout=timedelta(minutes=settings.session_idle_minutes),
            max_lifetime=timedelta(hours=settings.session_max_hours),
        ),
        unpack=UnpackLimits(max_unpacked=settings.max_unpacked_bytes),
        queue=queue,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        consumer = _background_consumer(settings, queue)
        try:
            yield
        finally:
            if consumer is not None:
                consumer.stop()
            engine.dispose()

    app = FastAPI(
        title="caretally",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=OPENAPI_URL,
        docs_url=DOCS_URL,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.database = shown_url(url)
    app.openapi = _problem_openapi(app)  # type: ignore[method-assign]
    problems.install(app)
    app.include_router(health.router)
    api = APIRouter(prefix=API_PREFIX)
    for module in (auth, patients, months, runs, imports, audit, admin, compliance):
        api.include_router(module.router)
    api.include_router(month_close.router)
    api.include_router(ingest_routes.router)
    app.include_router(api)
    mount_web(app)  # pages at /, before ServiceMiddleware so its 500 page sits inside it
    app.add_middleware(
        ServiceMiddleware,
        body_limit=settings.max_body_bytes,
        upload_limit=settings.max_upload_bytes,
        upload_paths=frozenset({f"{API_PREFIX}/imports"}),
        plain_paths=frozenset({OPENAPI_URL, DOCS_URL}),
        log_requests=settings.access_log,
    )
    return app
