"""Month close over HTTP, on SQLite and PostgreSQL: a month run started by a request finishes
as a job on a real consumer, its 837P downloads and validates with pyx12, a care-staff
token cannot lock the month, and another organization's job is a 404.

The server's practice identity is a folder of ``<organization>.toml`` files
(``CARETALLY_PRACTICE_FILE``); south's sends commercial claims through another receiver,
so its 837P is two interchanges, zipped.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from caretally.api.app import create_app
from caretally.api.settings import load_settings
from tests.api.world import MONTH, SECRET, World, build_world
from tests.conftest import skip_or_fail
from tests.export.test_payer_directory import DIRECTORY
from tests.export.x12check import validate_x12

V1 = "/api/v1"
REDIS_ENV = "CARETALLY_TEST_REDIS_URL"


@pytest.fixture(scope="module")
def world(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("practices")
    (folder / "north.toml").write_text(DIRECTORY, encoding="utf-8")
    two_receivers = DIRECTORY.replace('id = "BX001"\n', 'id = "BX001"\nreceiver = "state"\n')
    assert two_receivers != DIRECTORY
    (folder / "south.toml").write_text(two_receivers, encoding="utf-8")
    built = build_world(
        module_db_url,
        practice_file=str(folder),
        queue_file=str(tmp_path_factory.mktemp("queue") / "jobs.queue"),
        job_heartbeat_seconds=1,
    )
    yield built
    built.engine.dispose()


def follow(client: TestClient, location: str, headers: dict[str, str], seconds: float = 90) -> dict[str, Any]:
    """Poll a job until it has finished; every answer seen is checked on the way."""
    deadline = time.monotonic() + seconds
    while True:
        answer = client.get(location, headers=headers)
        assert answer.status_code == 200, answer.text
        job = answer.json()
        assert job["state"] in ("queued", "running", "succeeded", "failed")
        if job["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_a_month_run_started_over_http_finishes_as_a_job(world: World, client: TestClient) -> None:
    biller = world.auth("north", "biller")
    started = client.post(f"{V1}/months/{MONTH}/runs", headers=biller)
    assert started.status_code == 202, started.text
    job = started.json()
    assert started.headers["location"] == f"{V1}/jobs/{job['job_id']}"
    assert job["kind"] == "month_run" and job["month"] == MONTH
    done = follow(client, started.headers["location"], biller)
    assert done["state"] == "succeeded", done
    assert done["progress"]["total"] > 0 and done["progress"]["done"] == done["progress"]["total"]
    # The world billed the month already: same data, the same run.
    assert done["run_id"] == world.run_ids["north"] and done["outcome"] == "unchanged"
    assert done["created_by"].startswith("token:") and done["error"] is None
    run = client.get(f"{V1}/runs/{done['run_id']}", headers=biller)
    assert run.status_code == 200 and run.json()["month"] == MONTH
    listed = client.get(f"{V1}/jobs?month={MONTH}", headers=biller).json()
    assert done["job_id"] in [j["job_id"] for j in listed]


def test_another_organizations_job_is_a_404(world: World, client: TestClient) -> None:
    started = client.post(f"{V1}/months/{MONTH}/runs", headers=world.auth("north", "biller"))
    job_id = started.json()["job_id"]
    theirs = client.get(f"{V1}/jobs/{job_id}", headers=world.auth("south", "admin"))
    missing = client.get(
        f"{V1}/jobs/00000000-0000-4000-8000-000000000000", headers=world.auth("south", "admin")
    )
    assert theirs.status_code == missing.status_code == 404
    assert theirs.headers["content-type"] == "application/problem+json"
    assert {k: v for k, v in theirs.json().items() if k != "request_id"} == {
        k: v for k, v in missing.json().items() if k != "request_id"
    }
    assert job_id not in client.get(f"{V1}/jobs", headers=world.auth("south", "admin")).text


def test_the_837p_downloads_and_validates_with_pyx12(world: World, client: TestClient) -> None:
    answer = client.get(f"{V1}/months/{MONTH}/claims?format=x12", headers=world.auth("north", "biller"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/edi-x12")
    assert answer.headers["x-caretally-run"] == world.run_ids["north"]
    assert 'filename="claims-2026-03.x12"' in answer.headers["content-disposition"]
    text = answer.content.decode("ascii")
    assert text.startswith("ISA*") and "*837*" in text
    result = validate_x12(text)
    assert result.accepted, result.errors
    assert "north-P1" in text or "NORTH-P1" in text.upper()


def test_claims_in_the_other_formats(world: World, client: TestClient) -> None:
    biller = world.auth("north", "biller")
    as_csv = client.get(f"{V1}/months/{MONTH}/claims?format=csv", headers=biller)
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert rows and {r["patient_id"] for r in rows} <= {f"north-P{n}" for n in range(1, 10)}
    as_json = client.get(f"{V1}/months/{MONTH}/claims?format=json", headers=biller)
    assert as_json.status_code == 200 and len(json.loads(as_json.content)) == len(rows)
    fhir = client.get(f"{V1}/months/{MONTH}/claims?format=fhir", headers=biller)
    assert fhir.status_code == 200 and fhir.headers["content-type"].startswith("application/fhir+json")
    assert json.loads(fhir.content)["resourceType"] == "Bundle"


def test_several_receivers_come_back_zipped_each_valid(world: World, client: TestClient) -> None:
    answer = client.get(f"{V1}/months/{MONTH}/claims?format=x12", headers=world.auth("south", "biller"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        names = sorted(archive.namelist())
        texts = [archive.read(n).decode("ascii") for n in names]
    assert len(names) == 2 and any("ILMEDICAID" in n for n in names), names
    for text in texts:
        assert validate_x12(text).accepted


def test_without_a_practice_identity_the_837p_is_a_clear_409(world: World, tmp_path: Path) -> None:
    bare = create_app(
        load_settings(
            database_url=world.url,
            secret_key=SECRET,
            queue_file=str(tmp_path / "q.queue"),
            in_process_worker=False,
        )
    )
    answer = TestClient(bare).get(
        f"{V1}/months/{MONTH}/claims?format=x12", headers=world.auth("north", "biller")
    )
    assert answer.status_code == 409 and answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["code"] == "practice_needed" and "CARETALLY_PRACTICE_FILE" in problem["hint"]
    bare.state.service.engine.dispose()


def test_an_unknown_format_is_refused(world: World, client: TestClient) -> None:
    answer = client.get(f"{V1}/months/{MONTH}/claims?format=pdf", headers=world.auth("north", "biller"))
    assert answer.status_code == 422 and answer.json()["errors"][0]["source"] == "query.format"


def test_nothing_to_lock_is_a_409_naming_the_month(world: World, client: TestClient) -> None:
    answer = client.post(f"{V1}/months/2026-05/lock", headers=world.auth("north", "biller"))
    assert answer.status_code == 409, answer.text
    assert answer.json()["code"] == "no_run" and "2026-05" in answer.json()["detail"]


def test_care_staff_cannot_lock_a_biller_can_once(world: World, client: TestClient) -> None:
    nurse = client.post(f"{V1}/months/{MONTH}/lock", headers=world.auth("north", "care_staff"))
    assert nurse.status_code == 403 and nurse.headers["content-type"] == "application/problem+json"
    biller = world.auth("north", "biller")
    locked = client.post(f"{V1}/months/{MONTH}/lock", headers=biller, json={"accept_provisional": False})
    assert locked.status_code == 200, locked.text
    assert locked.json()["status"] == "locked" and locked.json()["run_id"] == world.run_ids["north"]
    again = client.post(f"{V1}/months/{MONTH}/lock", headers=biller)
    assert again.status_code == 409 and again.json()["code"] == "already_locked"
    assert world.run_ids["north"] in again.json()["detail"]


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(REDIS_ENV)
    if not url:
        skip_or_fail(f"the Redis job-queue tests need {REDIS_ENV} (.ci/run sets it)")
    return url


def test_with_redis_a_separate_worker_process_finishes_the_job(redis_url: str, tmp_path: Path) -> None:
    """Production layout: the server queues on Redis and runs no consumer; `caretally worker`
    (two consumer processes) does."""
    url = f"sqlite:///{tmp_path / 'redis.db'}"
    served = build_world(url, redis_url=redis_url)
    assert served.app.state.service.queue is not None
    env = {**os.environ, "CARETALLY_REDIS_URL": redis_url}
    worker = subprocess.Popen(
        [sys.executable, "-m", "caretally.cli.main", "worker", "--db", url, "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with TestClient(served.app) as client:
            biller = served.auth("south", "biller")
            started = client.post(f"{V1}/months/2026-04/runs", headers=biller)
            assert started.status_code == 202, started.text
            done = follow(client, started.headers["location"], biller, 120)
            assert done["state"] == "succeeded", done
            assert done["outcome"] == "created" and done["run_id"] != served.run_ids["south"]
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(30)
        served.app.state.service.queue.huey.flush()
        served.engine.dispose()
    assert "Traceback" not in (worker.stderr.read() if worker.stderr else "")
