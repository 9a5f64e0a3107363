"""A served web app on a real database, with one signed-in browser (a ``TestClient``) per role.

``WebWorld`` holds the app built by ``create_app`` and a user per role; ``signed_in(role)``
returns a client that signed in through the real ``/signin`` form, cookies and all.
Forms are read from the HTML a page returned (their CSRF token included), never made up.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from html import unescape
from pathlib import Path
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


# --------------------------------------------------------------------------------------
# A synthetic practice behind the app: what the care pages and the browser journeys use
# --------------------------------------------------------------------------------------

#: The practice's months, "today" for its worklist (mid-September, periods still open),
#: and the months billed (June locked, so time there is refused).
FIRST_MONTH = date(2026, 6, 1)
TODAY = date(2026, 9, 20)
BILLED = ("2026-06", "2026-07", "2026-08")
LOCKED = "2026-06"


@dataclass
class CareWorld(WebWorld):
    nurse_practitioner: str = ""
    lock_run: str = ""


def build_care_world(db_url: str, workdir: Path, *, patients: int = 12, **settings: Any) -> CareWorld:
    """The web world over a synthesized, imported and partly billed practice.

    The care-staff user is linked to one of the practice's practitioners (time is logged
    as them); no alert thresholds are set (tests add the ones they need).
    """
    from caretally.billing.payers import PayerRules
    from caretally.billing.run import bill_month, lock_month
    from caretally.dates import parse_month
    from caretally.ingest import import_bundle
    from caretally.services import care
    from caretally.synth import SynthConfig, synthesize

    base = build_web_world(db_url, **settings)
    world = CareWorld(base.app, base.engine, base.url)
    bundle = workdir / "bundle"
    synthesize(SynthConfig(patients=patients, start=FIRST_MONTH, months=4, seed=11, lead_in_days=29), bundle)
    report = import_bundle(world.engine, ORG, bundle)
    assert report.ok(), report.problems[:3]
    rules = PayerRules.load()
    for month in BILLED:
        bill_month(world.engine, ORG, parse_month(month), rules)
    world.lock_run = lock_month(world.engine, ORG, LOCKED).run_id
    people = care.practitioner_choices(world.engine, ORG)
    world.nurse_practitioner = people[0][0]
    users = {u.email: u.user_id for u in accounts.list_users(world.engine, ORG)}
    care.link_practitioner(
        world.engine, cli_actor(ORG), users[email_of("care_staff")], world.nurse_practitioner
    )
    return world


@pytest.fixture(scope="module")
def care_world(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CareWorld]:
    """One practice per test module and database (building it takes a while)."""
    world = build_care_world(module_db_url, tmp_path_factory.mktemp("care"))
    yield world
    world.close()
