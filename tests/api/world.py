"""Two small practices in one database, with a credential for every role in each.

``north`` and ``south`` hold the same test bundle with every id prefixed by the
organization's name, so a response that leaks the other tenant's data is found by a
plain substring search for ``north-`` or ``south-``.
"""

from __future__ import annotations

import copy
import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine

from caretally.api.app import create_app
from caretally.api.settings import load_settings
from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month
from caretally.dates import parse_month
from caretally.ingest import import_records
from caretally.services import accounts
from caretally.services.context import cli_actor
from caretally.services.permissions import Role
from tests.ingest.bundles import valid_bundle, write_csv

SECRET = "k7Qm2vX9pL4wR8tN1bZ6cY3hJ5fD0sGa-tests-only"
ORGS = ("north", "south")
MONTH = "2026-03"
CLOCK = datetime(2026, 3, 31, 23, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
_ID_COLUMNS = (
    "patient_id",
    "enrollment_id",
    "device_id",
    "entry_id",
    "practitioner_id",
    "billing_practitioner_id",
    "reading_id",
)


def tenant_bundle(org: str) -> dict[str, list[dict[str, Any]]]:
    """The ingest tests' valid bundle with every id made ``<org>-<id>``."""
    bundle = copy.deepcopy(valid_bundle())
    for rows in bundle.values():
        for row in rows:
            for column in _ID_COLUMNS:
                if row.get(column):
                    row[column] = f"{org}-{row[column]}"
    return bundle


def zipped(bundle: Mapping[str, Sequence[Mapping[str, Any]]], folder: Path, top: str | None = None) -> bytes:
    """The bundle written as CSV files and zipped (under one top folder when ``top``)."""
    write_csv(folder, bundle)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{top}/{path.name}" if top else path.name)
    return buffer.getvalue()


@dataclass
class World:
    url: str
    app: FastAPI
    engine: Engine
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)  # org → role → secret
    token_ids: dict[str, dict[str, int]] = field(default_factory=dict)
    run_ids: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)  # org → a user's id (not an admin)
    emails: dict[str, str] = field(default_factory=dict)  # org → the signing-in user's email

    def auth(self, org: str, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[org][role]}"}

    def patient(self, org: str, n: int = 1) -> str:
        return f"{org}-P{n}"


def build_world(url: str, **settings: Any) -> World:
    app = create_app(load_settings(database_url=url, secret_key=SECRET, **settings))
    engine = app.state.service.engine
    world = World(url, app, engine)
    for org in ORGS:
        accounts.add_org(engine, org, f"{org.title()} Clinic")
        report = import_records(engine, org, tenant_bundle(org), now=CLOCK)
        assert report.ok(), report.problems
        run = bill_month(engine, org, parse_month(MONTH), PayerRules.load())
        world.run_ids[org] = run.run_id
        actor = cli_actor(org)
        world.tokens[org], world.token_ids[org] = {}, {}
        for role in Role:
            made = accounts.create_token(engine, actor, name=f"{org}-{role.value}", role=role.value)
            world.tokens[org][role.value] = made.secret
            world.token_ids[org][role.value] = made.record.token_id
        world.emails[org] = f"nurse@{org}.example"
        user = accounts.add_user(engine, actor, email=world.emails[org], password=PASSWORD, role="care_staff")
        world.user_ids[org] = user.user_id
    return world
