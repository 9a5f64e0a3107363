"""A served web app on a real database, with one signed-in browser (a ``TestClient``) per role.

``WebWorld`` holds the app built by ``create_app`` and a user per role; ``signed_in(role)``
returns a client that signed in through the real ``/signin`` form, cookies and all.
Forms are read from the HTML a page returned (their CSRF token included), never made up.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import unescape
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from caretally.api.app import create_app
from caretally.api.settings import load_settings
from caretally.services import accounts
from caretally.services.context import cli_actor
from caretally.services.permissions import Role

SECRET = "w3bQm2vX9pL4wR8tN1bZ6cY3hJ5fD0sGa-tests-only"
PASSWORD = "correct horse battery staple"
ORG = "clinic"

_HIDDEN = re.compile(r'<input type="hidden" name="csrf_token" value="([^"]*)"')


def csrf_of(html: str) -> str:
    """The CSRF token the page's first POST form carries."""
    found = _HIDDEN.search(html)
    assert found is not None, "the page has no form carrying a CSRF token"
    return unescape(found.group(1))


def email_of(role: str) -> str:
    return f"{role.replace('_', '.')}@{ORG}.example"


@dataclass
class WebWorld:
    app: FastAPI
    engine: Engine
    url: str
    clients: list[TestClient] = field(default_factory=list)

    def client(self, **kw: Any) -> TestClient:
        made = TestClient(self.app, follow_redirects=False, **kw)
        made.__enter__()
        self.clients.append(made)
        return made

    def sign_in(self, client: TestClient, role: str, *, password: str = PASSWORD) -> Any:
        form = client.get("/signin")
        return client.post(
            "/signin",
            data={"email": email_of(role), "password": password, "csrf_token": csrf_of(form.text)},
        )

    def signed_in(self, role: str) -> TestClient:
        made = self.client()
        answer = self.sign_in(made, role)
        assert answer.status_code == 303, answer.text[:500]
        return made

    def close(self) -> None:
        for made in self.clients:
            made.__exit__(None, None, None)
        self.engine.dispose()


def build_web_world(db_url: str, **settings: Any) -> WebWorld:
    app = create_app(load_settings(database_url=db_url, secret_key=SECRET, access_log=False, **settings))
    engine = app.state.service.engine
    accounts.add_org(engine, ORG, "Riverside Clinic")
    for role in Role:
        accounts.add_user(
            engine,
            cli_actor(ORG),
            email=email_of(role.value),
            password=PASSWORD,
            role=role.value,
            display_name=f"Test {role.value.replace('_', ' ')}",
        )
    return WebWorld(app, engine, db_url)


@pytest.fixture
def web(db_url: str) -> Iterator[WebWorld]:
    world = build_web_world(db_url)
    yield world
    world.close()
