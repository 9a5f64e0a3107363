"""``caretally serve --demo``: the demo practice, one user per role, then the web app.

What a new user needs to try the whole day's work in a browser: the synthetic practice
``caretally demo`` builds (made if its database is missing, kept otherwise), a user for
each role a person signs in as (admin, care staff, biller, auditor) with a random
password printed once on the terminal, and the demo practice's 837P identity stored as
the organization's practice settings so the 837P download works. Run again, it changes
nothing: existing users are kept (their passwords were shown the first time; an admin
or ``caretally users`` resets them) and the terminal says so.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import Engine, func, select, update

from caretally.cli.common import console
from caretally.dates import add_months, month_of, parse_month
from caretally.services import accounts, practice
from caretally.services.context import cli_actor
from caretally.services.errors import Conflict
from caretally.store import schema
from caretally.store.db import DEFAULT_ORG, open_database

#: The roles a person signs in as, with the demo's email for each.
DEMO_ROLES = ("admin", "care_staff", "biller", "auditor")
DEMO_FOLDER = Path("caretally-demo")
DEMO_DOMAIN = "demo.caretally.example"


@dataclass(frozen=True)
class DemoUser:
    role: str
    email: str
    password: str | None  # None: the user existed already


def demo_email(role: str) -> str:
    return f"{role.replace('_', '.')}@{DEMO_DOMAIN}"


def demo_url(folder: Path = DEMO_FOLDER) -> str:
    return f"sqlite:///{folder / 'caretally.db'}"


def _has_practice(engine: Engine) -> bool:
    with engine.connect() as conn:
        found = conn.execute(
            select(func.count()).select_from(schema.patients).where(schema.patients.c.org_id == DEFAULT_ORG)
        ).scalar()
    return bool(found)


def build_practice(engine: Engine, folder: Path, *, patients: int, months: int, seed: int) -> str:
    """Synthesize and import the practice, bill its last complete month (as ``caretally demo``)."""
    from caretally.billing.payers import PayerRules
    from caretally.billing.run import bill_month
    from caretally.ingest import import_bundle
    from caretally.synth import SynthConfig, synthesize

    first = add_months(date.today(), -months)
    last = month_of(add_months(first, months - 1))
    bundle = folder / "bundle"
    with console.status("synthesizing the demo practice"):
        synthesize(SynthConfig(patients=patients, start=first, months=months, seed=seed), bundle)
    with console.status("importing"):
        report = import_bundle(engine, DEFAULT_ORG, bundle)
    if not report.ok():
        raise RuntimeError(f"the demo bundle did not import: {report.problems[:3]}")
    with console.status(f"billing {last.start:%Y-%m}"):
        bill_month(engine, DEFAULT_ORG, parse_month(f"{last.start:%Y-%m}"), PayerRules.load())
    return f"{last.start:%Y-%m}"


def ensure_users(engine: Engine) -> list[DemoUser]:
    """One user per role; a user that exists already is kept as it is."""
    made = []
    actor = cli_actor(DEFAULT_ORG)
    for role in DEMO_ROLES:
        email = demo_email(role)
        password = secrets.token_urlsafe(12)
        try:
            accounts.add_user(
                engine,
                actor,
                email=email,
                password=password,
                role=role,
                display_name=f"Demo {role.replace('_', ' ')}",
            )
        except Conflict:
            made.append(DemoUser(role, email, None))
        else:
            made.append(DemoUser(role, email, password))
    return made


#: Who the demo nurse logs time as: clinical staff (``staff``) first, the usual performer of RPM time.
_NURSE_CLASSES = ("staff", "practitioner", "therapist")


def link_nurse(engine: Engine, users: list[DemoUser]) -> None:
    """A new care-staff user logs time as one of the practice's clinical staff."""
    from caretally.services import care

    nurse = next((u for u in users if u.role == "care_staff" and u.password is not None), None)
    if nurse is None:
        return
    p, u = schema.practitioners, schema.users
    with engine.connect() as conn:
        user_id = conn.execute(select(u.c.user_id).where(u.c.email == nurse.email)).scalar_one()
        rows = conn.execute(
            select(p.c.practitioner_id, p.c.performer_class)
            .where(p.c.org_id == DEFAULT_ORG)
            .order_by(p.c.practitioner_id)
        ).all()
    ranked = sorted(
        rows,
        key=lambda r: _NURSE_CLASSES.index(r.performer_class) if r.performer_class in _NURSE_CLASSES else 9,
    )
    if ranked:
        care.link_practitioner(engine, cli_actor(DEFAULT_ORG), user_id, ranked[0].practitioner_id)


#: What the header says for the demo organization (the import names it by its id).
DEMO_ORG_NAME = "Caretally demo clinic"


def name_demo_org(engine: Engine) -> None:
    """Give the demo organization a readable name, unless someone has named it already."""
    o = schema.organizations
    with engine.begin() as conn:
        conn.execute(
            update(o).where(o.c.org_id == DEFAULT_ORG, o.c.name == DEFAULT_ORG).values(name=DEMO_ORG_NAME)
        )


def prepare_demo(
    url: str | None, *, patients: int = 200, months: int = 3, seed: int = 7
) -> tuple[str, list[DemoUser], bool]:
    """The demo database's URL, its users, and whether the practice was built just now."""
    folder = DEMO_FOLDER
    if url is None:
        folder.mkdir(parents=True, exist_ok=True)
        url = demo_url(folder)
    engine = open_database(url, DEFAULT_ORG)
    try:
        built = not _has_practice(engine)
        if built:
            build_practice(engine, folder, patients=patients, months=months, seed=seed)
        actor = cli_actor(DEFAULT_ORG)
        if not practice.get_settings(engine, actor).has_identity:
            practice.save_settings(
                engine, actor, identity_toml=practice.demo_identity_toml(), locality="", payer_overlays=""
            )
        name_demo_org(engine)
        users = ensure_users(engine)
        link_nurse(engine, users)
    finally:
        engine.dispose()
    return url, users, built


def print_users(users: list[DemoUser], where: str) -> None:
    """The sign-ins, passwords shown once: they are not stored anywhere readable."""
    console.print(f"\nSign in at {where}/signin as:")
    for u in users:
        if u.password is None:
            console.print(f"  {u.role:<11} {u.email}  (exists already; password as shown the first time)")
        else:
            console.print(f"  {u.role:<11} {u.email}  password: {u.password}", highlight=False)
    if any(u.password for u in users):
        console.print("These passwords are shown only now.\n")
