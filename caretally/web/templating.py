"""The Jinja2 environment every page is rendered with.

One environment, built by a function (no import-time singleton): autoescaping on, and
``StrictUndefined`` so a view-model field a template expects but a route forgot is an
error in tests, not an empty cell in production. Filters format money and dates the
same way everywhere. ``static_url`` adds a content hash so a browser never keeps a stale
stylesheet after an upgrade; the review script points it at a relative folder.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from caretally.web.phrasing import money, short_date
from caretally.web.viewmodels import Badge, Link

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
#: The form field every POST form carries (the session's CSRF token).
CSRF_FIELD = "csrf_token"


@cache
def static_version() -> str:
    """A digest of the static files: changes whenever one of them does."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(STATIC_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def long_date(value: date | None) -> str:
    """``Tue 30 Sep 2026``: unambiguous for any reader; ``—`` when there is none."""
    if value is None:
        return "—"
    return f"{value:%a} {value.day} {value:%b %Y}"


def when(value: datetime | None) -> str:
    """An instant as ``2026-09-30 14:05 UTC``; times are stored and shown in UTC."""
    if value is None:
        return "—"
    return f"{value:%Y-%m-%d %H:%M} UTC"


def duration(seconds: int) -> str:
    """``1:05:09`` or ``12:09``: how a timer reads."""
    hours, rest = divmod(max(0, int(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _money(value: Decimal | str | None) -> str:
    if value is None or value == "":
        return "—"
    return money(Decimal(str(value)))


def environment(*, static_prefix: str = "/static/") -> Environment:
    """The environment for pages; ``static_prefix`` is where ``static/`` is served."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html", "svg"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    version = static_version()
    env.filters.update(money=_money, short_date=short_date, long_date=long_date, when=when, duration=duration)
    env.tests.update(
        link=lambda v: isinstance(v, Link),
        badge=lambda v: isinstance(v, Badge),
    )
    env.globals.update(
        static_url=lambda path: f"{static_prefix}{path}?v={version}",
        CSRF_FIELD=CSRF_FIELD,
    )
    return env


def render(env: Environment, template: str, **context: Any) -> str:
    return env.get_template(template).render(**context)


def templates(env: Environment | None = None) -> Jinja2Templates:
    """FastAPI's ``Jinja2Templates`` over our environment, for ``TemplateResponse``."""
    from starlette.templating import Jinja2Templates

    return Jinja2Templates(env=env or environment())
