"""A reading posted to a real ``caretally serve`` shows in the worklist within 5 seconds.

The server (uvicorn in its own process, the end-to-end test's fixture) keeps the worklist
as state; the POST queues a refresh that the server's own consumer runs (embedded queue).
The test waits for the kept state to take the reading in without asking the worklist —
the background refresh alone — and then reads it over HTTP.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from caretally.store import schema
from caretally.store.db import open_database
from tests.api import test_serve_e2e
from tests.api.world import tenant_bundle, zipped

server = test_serve_e2e.server  # the real server of the end-to-end test
AS_OF = "2026-03-20"
VISIBLE_WITHIN = 5.0


def _device_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in rows if r["patient_id"] == "north-P1" and r["period"]["kind"] == "thirty_day")


def test_a_posted_reading_shows_in_the_worklist_within_five_seconds(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, tokens, _process, db_url = server
    integration = {"Authorization": f"Bearer {tokens['integration']}"}
    nurse = {"Authorization": f"Bearer {tokens['care_staff']}"}
    query = {"as_of": AS_OF, "include_done": "true", "limit": 200}
    engine = open_database(db_url, None)
    states, touches = schema.worklist_states, schema.month_touches
    with httpx.Client(base_url=base, timeout=60) as http:
        bundle = zipped(tenant_bundle("north"), tmp_path / "bundle")
        imported = http.post(
            "/api/v1/imports", content=bundle, headers={**integration, "Content-Type": "application/zip"}
        )
        assert imported.status_code == 200 and imported.json()["stored"], imported.text
        before = _device_row(http.get("/api/v1/worklist", params=query, headers=nurse).json()["items"])
        assert before["period"]["start"] <= "2026-03-10" <= AS_OF

        reading = {
            "reading_id": "served-1",
            "patient_id": "north-P1",
            "device_id": "north-D1",
            "measured_at": "2026-03-10T15:00:00Z",
            "type": "blood_pressure",
            "value": "126/80",
            "unit": "mmHg",
            "transmission": "auto",
        }
        posted_at = time.monotonic()
        posted = http.post("/api/v1/readings", json=[reading], headers=integration)
        assert posted.status_code in (200, 201), posted.text

        def kept_through() -> tuple[int, int]:
            with engine.connect() as conn:
                mark = conn.execute(
                    select(func.max(touches.c.id)).where(touches.c.org_id == "north")
                ).scalar_one()
                kept = conn.execute(
                    select(func.max(states.c.touches_through)).where(states.c.org_id == "north")
                ).scalar_one()
            return int(kept or 0), int(mark or 0)

        while kept_through()[0] < kept_through()[1]:  # the server's consumer refreshes on its own
            assert time.monotonic() - posted_at < VISIBLE_WITHIN, "the background refresh took over 5 s"
            time.sleep(0.05)
        refreshed = time.monotonic() - posted_at
        after = _device_row(http.get("/api/v1/worklist", params=query, headers=nurse).json()["items"])
        visible = time.monotonic() - posted_at
    engine.dispose()
    assert after["days_so_far"] == before["days_so_far"] + 1, (before, after)
    assert visible < VISIBLE_WITHIN, (
        f"visible after {visible:.2f} s (state refreshed after {refreshed:.2f} s)"
    )
    print(f"post -> kept state refreshed {refreshed:.2f} s, visible in GET /worklist {visible:.2f} s")
