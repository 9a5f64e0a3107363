"""Web test fixtures: the browser harness, and a site rendered once from a synthetic practice."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.conftest import module_db_url
from tests.web.browser import browser, caretally_server, chromium, page, static_server
from tests.web.practice import Practice, Rendered, build_practice
from tests.web.review import write_site
from tests.web.webapp import care_world, web

__all__ = [
    "browser",
    "care_world",
    "caretally_server",
    "chromium",
    "module_db_url",
    "page",
    "static_server",
    "web",
]


@dataclass
class Site:
    practice: Practice
    folder: Path
    pages: dict[str, tuple[Rendered, Path]]


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Every page rendered from one synthetic practice (built once per test session)."""
    work = tmp_path_factory.mktemp("practice")
    practice = build_practice(work)
    folder = work / "site"
    written = write_site(folder, practice)
    yield Site(practice, folder, {item.name: (item, path) for item, path in written})
    practice.engine.dispose()
