"""``caretally orgs | users | tokens | audit`` as a new user types them, through the real
entry point (``run``: exit statuses and one-line errors), stdin included."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from caretally.cli.main import run
from caretally.services import accounts
from caretally.store.db import open_database

PASSWORD = "correct horse battery staple"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def call(*args: str, stdin: str | None = None, db: str) -> Result:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin or ""))
        try:
            run([*args, "--db", db])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return call


def test_first_admin_and_token_from_the_command_line(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    db = f"sqlite:///{tmp_path / 'caretally.db'}"
    added = cli("orgs", "add", "acme", "--name", "Acme Clinic", db=db)
    assert added.returncode == 0, added.stderr
    assert "Organization acme (Acme Clinic) added." in added.stdout
    again = cli("orgs", "add", "acme", "--name", "Acme", db=db)
    assert again.returncode == 1 and "exists already" in again.stderr

    add = ["users", "add", "--password-stdin", "--role", "admin", "--org"]
    user = cli(*add, "acme", "--email", "boss@acme.example", stdin=PASSWORD + "\n", db=db)
    assert user.returncode == 0, user.stderr
    assert "added to acme as admin" in user.stdout
    weak = cli(*add, "acme", "--email", "x@acme.example", stdin="hunter2\n", db=db)
    assert weak.returncode == 1 and "at least 15 characters" in weak.stderr
    unknown = cli(*add, "nope", "--email", "y@acme.example", stdin=PASSWORD, db=db)
    assert unknown.returncode == 1 and "no organization nope" in unknown.stderr

    made = cli("tokens", "create", "--org", "acme", "--role", "integration", "--name", "ehr", db=db)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("ctk_") and "\n" not in token
    assert "shown this once" in made.stderr
    listed = cli("tokens", "list", "--org", "acme", "--json", db=db)
    assert token not in listed.stdout
    assert json.loads(listed.stdout)[0]["prefix"] == token[:12]

    engine = open_database(db)
    policy = accounts.SessionPolicy(secret_key="k7Qm2vX9pL4wR8tN1bZ6cY3hJ5fD0sGa-tests-only")
    assert accounts.authenticate(engine, policy, token).role == "integration"
    revoked = cli("tokens", "revoke", "--org", "acme", "--name", "ehr", db=db)
    assert revoked.returncode == 0, revoked.stderr
    assert cli("tokens", "revoke", "--org", "acme", "--name", "ehr", db=db).returncode == 1

    users = json.loads(cli("users", "list", "--org", "acme", "--json", db=db).stdout)
    assert [(u["email"], u["role"], u["active"]) for u in users] == [("boss@acme.example", "admin", True)]
    off = cli("users", "deactivate", "--org", "acme", "--email", "boss@acme.example", db=db)
    assert off.returncode == 0 and "now inactive" in off.stdout

    verified = cli("audit", "verify", db=db)
    assert verified.returncode == 0, verified.stderr
    assert "acme: 5 event(s), chain intact" in verified.stdout


def test_a_care_staff_user_is_linked_to_a_practitioner_when_added(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import insert

    from caretally.services import care
    from caretally.store import schema

    db = f"sqlite:///{tmp_path / 'caretally.db'}"
    assert cli("orgs", "add", "acme", "--name", "Acme Clinic", db=db).returncode == 0
    engine = open_database(db)
    with engine.begin() as conn:  # a practitioner as an import stores it
        conn.execute(
            insert(schema.practitioners).values(
                org_id="acme",
                practitioner_id="PRV9",
                name="Ann Lee",
                credential="RN",
                performer_class="staff",
            )
        )
    add = ["users", "add", "--password-stdin", "--role", "care_staff", "--org", "acme"]
    typo = cli(*add, "--email", "ann@acme.example", "--practitioner", "PRV8", stdin=PASSWORD, db=db)
    assert typo.returncode == 1 and "no practitioner PRV8" in typo.stderr
    assert "Traceback" not in typo.stderr
    assert accounts.list_users(engine, "acme") == []  # nobody was added without the link
    made = cli(*add, "--email", "ann@acme.example", "--practitioner", "PRV9", stdin=PASSWORD, db=db)
    assert made.returncode == 0, made.stderr
    assert "added to acme as care_staff, logging time as PRV9." in made.stdout
    (ann,) = accounts.list_users(engine, "acme")
    assert care.linked_practitioners(engine, "acme") == {ann.user_id: "PRV9"}
    # without the option the user is added unlinked, and the terminal says what that means
    bare = cli(*add, "--email", "bob@acme.example", stdin=PASSWORD, db=db)
    assert bare.returncode == 0 and "cannot save time until an admin links" in bare.stderr
    assert len(care.linked_practitioners(engine, "acme")) == 1
