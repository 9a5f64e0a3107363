"""``POST /api/v1/imports``: the CLI's import behind HTTP, and an upload that cannot hurt the server."""

from __future__ import annotations

import asyncio
import io
import stat
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from caretally.api.app import create_app
from caretally.api.settings import load_settings
from tests.api.world import SECRET, World, tenant_bundle, zipped

V1 = "/api/v1"
ZIP = {"Content-Type": "application/zip"}


def _zip(members: dict[str, bytes], *, links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _post(client: TestClient, world: World, body: bytes, role: str = "integration", **params: str) -> object:
    return client.post(
        f"{V1}/imports", content=body, params=params, headers={**ZIP, **world.auth("north", role)}
    )


def test_a_zipped_bundle_imports_with_the_clis_report(
    world: World, client: TestClient, tmp_path: Path
) -> None:
    answer = _post(client, world, zipped(tenant_bundle("north"), tmp_path / "b", top="export-2026-03"))
    body = answer.json()
    assert answer.status_code == 200, body
    assert body["ok"] and body["stored"] and body["problems"] == []
    assert body["counts"]["readings"] == {
        "read": 4,
        "inserted": 0,
        "unchanged": 4,
        "updated": 0,
        "rejected": 0,
    }
    assert body["source"].startswith("upload bundle.zip by token:")
    batches = client.get(f"{V1}/imports", headers=world.auth("north", "auditor")).json()
    assert batches[0]["batch_id"] == body["batch_id"]
    (event,) = client.get(
        f"{V1}/audit-events",
        params={"action": "import.create", "limit": 1},
        headers=world.auth("north", "auditor"),
    ).json()["items"]
    assert event["detail"]["batch_id"] == body["batch_id"]
    assert event["patient_ids"] == ["north-P1", "north-P2"]


def test_a_bad_bundle_stores_nothing_and_lists_every_problem(
    world: World, client: TestClient, tmp_path: Path
) -> None:
    bundle = tenant_bundle("north")
    bundle["readings"][1]["measured_at"] = "2026-03-01 19:45"  # no offset
    bundle["readings"][2]["value"] = ""
    bundle["patients"].append({**bundle["patients"][0], "patient_id": "north-P9", "birth_date": "1948-02-30"})
    answer = _post(client, world, zipped(bundle, tmp_path / "bad"))
    body = answer.json()
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert body["code"] == "bundle_refused" and "nothing was stored" in body["detail"]
    assert body["request_id"] == answer.headers["x-request-id"]
    where = {(e["source"], e["field"]) for e in body["errors"]}
    assert {
        ("readings.csv:3", "measured_at"),
        ("readings.csv:4", "value"),
        ("patients.csv:4", "birth_date"),
    } <= where
    assert all(e["code"] and e["message"] for e in body["errors"])
    assert "Traceback" not in answer.text
    nurse = world.auth("north", "care_staff")
    assert client.get(f"{V1}/patients/north-P9", headers=nurse).status_code == 404

    partial = _post(client, world, zipped(bundle, tmp_path / "bad2"), partial="true")
    kept = partial.json()
    assert partial.status_code == 200 and kept["stored"] and not kept["ok"]
    assert (
        kept["counts"]["readings"]["rejected"] == 2 and kept["problems_total"] == len(kept["problems"]) >= 3
    )


@pytest.mark.parametrize(
    "members, links, code",
    [
        ({"../escape.csv": b"x"}, (), "zip_path_traversal"),
        ({"ok/../../escape.csv": b"x"}, (), "zip_path_traversal"),
        ({"/etc/cron.d/x.csv": b"x"}, (), "zip_absolute_path"),
        ({"patients.csv": b"patient_id\n"}, ("readings.csv",), "zip_symlink"),
        ({}, (), "zip_empty"),
    ],
)
def test_hostile_archives_are_refused_before_anything_is_written(
    world: World,
    client: TestClient,
    members: dict[str, bytes],
    links: tuple[str, ...],
    code: str,
    tmp_path: Path,
) -> None:
    answer = _post(client, world, _zip(members, links=links))
    body = answer.json()
    assert answer.status_code == 422, body
    assert body["code"] == "bad_zip"
    assert code in {e["code"] for e in body["errors"]}
    assert not (Path("/tmp") / "escape.csv").exists()


def test_not_a_zip_and_not_a_zip_type(world: World, client: TestClient) -> None:
    garbage = _post(client, world, b"patient_id,birth_date\nP1,1950-01-01\n")
    assert garbage.status_code == 422 and garbage.json()["code"] == "not_a_zip"
    typed = client.post(
        f"{V1}/imports",
        content=b"{}",
        headers={"Content-Type": "application/json", **world.auth("north", "integration")},
    )
    assert typed.status_code == 415 and typed.json()["code"] == "unsupported_media_type"


@pytest.fixture(scope="module")
def small(world: World) -> Iterator[TestClient]:
    """The same database behind a server with small limits."""
    app = create_app(
        load_settings(
            database_url=world.url,
            secret_key=SECRET,
            max_upload_bytes=64 * 1024,
            max_body_bytes=4 * 1024,
            max_unpacked_bytes=512 * 1024,
        )
    )
    with TestClient(app) as test_client:
        yield test_client
    app.state.service.engine.dispose()


def test_a_zip_bomb_is_refused_by_size(world: World, small: TestClient) -> None:
    bomb = _zip({"readings.csv": b"0" * (4 * 1024 * 1024)})
    assert len(bomb) < 64 * 1024  # small on the wire …
    answer = small.post(f"{V1}/imports", content=bomb, headers={**ZIP, **world.auth("north", "integration")})
    assert answer.status_code == 422  # … refused for what it would unpack to
    assert "zip_too_large" in {e["code"] for e in answer.json()["errors"]}


def test_a_declared_oversize_body_gets_413(world: World, small: TestClient) -> None:
    answer = small.post(
        f"{V1}/imports", content=b"x" * (65 * 1024), headers={**ZIP, **world.auth("north", "integration")}
    )
    assert answer.status_code == 413 and answer.json()["code"] == "body_too_large"
    json_body = small.post(
        f"{V1}/users",
        json={"email": "a@north.example", "password": "p" * 5000, "role": "auditor"},
        headers=world.auth("north", "admin"),
    )
    assert json_body.status_code == 413


def _asgi(
    app: object,
    headers: list[tuple[bytes, bytes]],
    receive: object,
    path: str = f"{V1}/imports",
    content_type: bytes = b"application/zip",
) -> list[dict[str, object]]:
    answers: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        answers.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", content_type), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    # Its own thread and loop: Playwright's sync API (the browser tests' session fixture)
    # keeps a loop running on the main thread, where asyncio.run() would refuse to start.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, app(scope, receive, send)).result()  # type: ignore[arg-type]
    return answers


def test_a_streamed_body_without_length_is_stopped_at_the_limit(world: World) -> None:
    """Chunked upload: the server stops asking for chunks once the limit is passed."""
    app = create_app(load_settings(database_url=world.url, secret_key=SECRET, max_upload_bytes=64 * 1024))
    asked: list[int] = []

    async def receive() -> dict[str, object]:
        asked.append(1)  # 64 × 8 KiB would be 512 KiB, eight times the limit
        return {"type": "http.request", "body": b"z" * 8192, "more_body": len(asked) < 64}

    token = world.tokens["north"]["integration"].encode()
    answers = _asgi(app, [(b"authorization", b"Bearer " + token)], receive)
    app.state.service.engine.dispose()
    assert answers[0]["status"] == 413
    assert len(asked) == 9  # 72 KiB read: the first chunk past 64 KiB


def test_content_length_over_the_limit_is_answered_without_reading_the_body(world: World) -> None:
    """At the ASGI level: the app never asks for a single body message."""
    app = create_app(load_settings(database_url=world.url, secret_key=SECRET, max_upload_bytes=64 * 1024))
    asked: list[str] = []

    async def receive() -> dict[str, object]:
        asked.append("body")
        return {"type": "http.request", "body": b"", "more_body": False}

    token = world.tokens["north"]["integration"].encode()
    headers = [(b"content-length", str(10 * 1024**3).encode()), (b"authorization", b"Bearer " + token)]
    answers = _asgi(app, headers, receive)
    app.state.service.engine.dispose()
    assert answers[0]["status"] == 413
    assert asked == []


def test_a_streamed_json_body_past_its_limit_is_a_413_too(world: World) -> None:
    app = create_app(load_settings(database_url=world.url, secret_key=SECRET, max_body_bytes=4 * 1024))
    asked: list[int] = []

    async def receive() -> dict[str, object]:
        asked.append(1)
        return {"type": "http.request", "body": b" " * 1024, "more_body": len(asked) < 64}

    token = world.tokens["north"]["admin"].encode()
    answers = _asgi(
        app, [(b"authorization", b"Bearer " + token)], receive, f"{V1}/users", b"application/json"
    )
    app.state.service.engine.dispose()
    assert answers[0]["status"] == 413
    assert b"body_too_large" in answers[1]["body"]
    assert len(asked) == 5
