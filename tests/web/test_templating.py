"""The environment: filters, static URLs, strictness, and the files the package ships."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from caretally.web.templating import (
    HERE,
    STATIC_DIR,
    TEMPLATES_DIR,
    duration,
    environment,
    long_date,
    static_version,
    when,
)

ROOT = Path(__file__).resolve().parents[2]


def test_filters() -> None:
    assert long_date(date(2026, 9, 30)) == "Wed 30 Sep 2026"
    assert long_date(None) == "—"
    assert when(datetime(2026, 9, 30, 14, 5, tzinfo=UTC)) == "2026-09-30 14:05 UTC"
    assert duration(0) == "0:00" and duration(754) == "12:34" and duration(3909) == "1:05:09"
    env = environment()
    assert env.from_string("{{ v | money }}").render(v="1234.5") == "$1,234.50"
    assert env.from_string("{{ v | money }}").render(v=None) == "—"


def test_static_urls_carry_a_digest_of_the_files() -> None:
    version = static_version()
    assert len(version) == 12
    assert environment().globals["static_url"]("app.css") == f"/static/app.css?v={version}"
    assert environment(static_prefix="static/").globals["static_url"]("app.js").startswith("static/app.js?v=")


def test_autoescape_is_on() -> None:
    assert environment().from_string("{{ v }}").render(v="<b>&") == "&lt;b&gt;&amp;"


def test_every_template_and_static_file_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "caretally"
    ]
    shipped = [p for p in patterns if p.startswith("web/")]
    files = [f for f in (*TEMPLATES_DIR.rglob("*"), *STATIC_DIR.rglob("*")) if f.is_file()]
    assert files
    for f in files:
        relative = f.relative_to(HERE.parent).as_posix()
        assert any(Path(relative).match(p.replace("**/", "")) or Path(relative).match(p) for p in shipped), (
            relative
        )


def test_fastapi_templates_use_our_environment() -> None:
    pytest.importorskip("starlette", reason="FastAPI arrives with the service (issue 11)")
    from caretally.web.templating import templates

    built = templates()
    assert built.env.globals["CSRF_FIELD"] == "csrf_token"
    assert built.env.get_template("pages/signin.html") is not None
