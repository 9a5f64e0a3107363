"""``/healthz`` answers ok only when the database answers at the current schema."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import text

from caretally.api.app import create_app
from caretally.api.settings import load_settings
from tests.api.world import SECRET


def test_healthz_is_ok_then_503_when_the_schema_is_behind(db_url: str) -> None:
    app = create_app(load_settings(database_url=db_url, secret_key=SECRET))
    engine = app.state.service.engine
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0005'"))
        answer = client.get("/healthz")
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json"
        assert (
            answer.json()["code"] == "schema_out_of_date" and "caretally db upgrade" in answer.json()["hint"]
        )
    engine.dispose()
