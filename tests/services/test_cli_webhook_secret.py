"""``caretally orgs set-webhook-secret`` as an admin types it, through the real entry point:
the secret it prints (or reads) is the one the webhook accepts, and only its digest is kept."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from sqlalchemy import select

from caretally.cli.main import run
from caretally.services import ingest
from caretally.services.errors import Unauthenticated
from caretally.store import schema
from caretally.store.db import open_database


def _call(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str, stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    try:
        run(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_set_webhook_secret_made_or_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'caretally.db'}"
    assert _call(monkeypatch, capsys, "orgs", "add", "acme", "--name", "Acme", "--db", db)[0] == 0
    code, out, err = _call(monkeypatch, capsys, "orgs", "set-webhook-secret", "acme", "--db", db)
    assert code == 0, err
    made = out.strip()
    assert len(made) >= 32 and "\n" not in made
    engine = open_database(db, None)
    assert ingest.webhook_actor(engine, "tenovi", made).org_id == "acme"
    with engine.connect() as conn:
        [digest] = conn.execute(select(schema.webhook_secrets.c.digest)).scalars().all()
    assert digest == hashlib.sha256(made.encode()).hexdigest() and made not in digest

    chosen = "Tq7-mZ2pW9xL4vB8nC1dR6yK3hF0sJ5gA"
    code, out, err = _call(
        monkeypatch, capsys, "orgs", "set-webhook-secret", "acme", "--stdin", "--db", db, stdin=chosen + "\n"
    )
    assert code == 0 and "replaced" in out and chosen not in out + err
    assert ingest.webhook_actor(engine, "tenovi", chosen).org_id == "acme"
    with pytest.raises(Unauthenticated):
        ingest.webhook_actor(engine, "tenovi", made)

    weak = _call(
        monkeypatch, capsys, "orgs", "set-webhook-secret", "acme", "--stdin", "--db", db, stdin="short\n"
    )
    assert weak[0] == 1 and "32–256 characters" in weak[2] and "Traceback" not in weak[2]
    nobody = _call(monkeypatch, capsys, "orgs", "set-webhook-secret", "nope", "--db", db)
    assert nobody[0] == 1 and "no organization nope" in nobody[2]
    source = _call(monkeypatch, capsys, "orgs", "set-webhook-secret", "acme", "--source", "fax", "--db", db)
    assert source[0] == 1 and "no webhook source" in source[2]
    engine.dispose()
