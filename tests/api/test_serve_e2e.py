"""End to end as a new user would: the CLI makes an admin and tokens, ``caretally serve``
runs uvicorn on a loopback port in its own process, and HTTP clients use it."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.api.world import PASSWORD, SECRET, tenant_bundle, zipped


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "caretally.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[str], str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARETALLY_")}
    env["CARETALLY_DATABASE_URL"] = db_url
    if not db_url.startswith("sqlite"):
        env["CARETALLY_SECRET_KEY"] = SECRET  # a server database must be given its key
    _cli("orgs", "add", "north", "--name", "North Clinic", env=env)
    add = ["users", "add", "--org", "north", "--role", "admin", "--password-stdin", "--email"]
    _cli(*add, "admin@north.example", env=env, stdin=PASSWORD + "\n")
    tokens = {
        role: _cli(
            "tokens", "create", "--org", "north", "--role", role, "--name", role, env=env
        ).stdout.strip()
        for role in ("integration", "biller", "care_staff")
    }
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "caretally.cli.main", "serve", "--port", str(port), "--log-level", "debug"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"caretally serve did not start: {process.communicate()[1][-2000:]}")
        time.sleep(0.2)
    try:
        yield base, tokens, process, db_url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def test_a_new_user_serves_signs_in_imports_and_reads(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, tokens, process, db_url = server
    with httpx.Client(base_url=base, timeout=60) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/api/v1/openapi.json").json()["info"]["title"] == "caretally"
        assert http.get("/api/docs").status_code == 200

        signed = http.post("/api/v1/auth/token", json={"email": "admin@north.example", "password": PASSWORD})
        assert signed.status_code == 200, signed.text
        admin = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        me = http.get("/api/v1/auth/me", headers=admin).json()
        assert (me["org_id"], me["role"], me["kind"]) == ("north", "admin", "user")

        bundle = zipped(tenant_bundle("north"), tmp_path / "bundle")
        integration = {"Authorization": f"Bearer {tokens['integration']}", "Content-Type": "application/zip"}
        imported = http.post("/api/v1/imports", content=bundle, headers=integration)
        assert imported.status_code == 200 and imported.json()["stored"], imported.text
        assert http.get("/api/v1/patients", headers=integration).status_code == 403

        biller = {"Authorization": f"Bearer {tokens['biller']}"}
        month = http.get("/api/v1/patients/north-P1/months/2026-03", headers=biller).json()
        assert month["source"] == "live" and {d["code"] for d in month["decisions"]} >= {"99454", "99457"}
        nurse = {"Authorization": f"Bearer {tokens['care_staff']}"}
        assert http.get("/api/v1/patients/north-P1", headers=nurse).json()["family_name"] == "Lopez"
        assert http.get("/api/v1/patients/someone-else", headers=nurse).status_code == 404
        events = http.get("/api/v1/audit-events", params={"patient_id": "north-P1"}, headers=admin).json()
        assert {e["action"] for e in events["items"]} >= {
            "patient.read",
            "patient_month.read",
            "import.create",
        }
        assert http.post("/api/v1/auth/sign-out", headers=admin).status_code == 204
        assert http.get("/api/v1/auth/me", headers=admin).status_code == 401

    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)
    log = process.stderr.read()
    assert f"caretally serving {base}" in log
    assert "GET /api/v1/patients/{patient_id} 200" in log
    for phi in ("north-P1", "Lopez", "Maria", "1948-05-17", "someone-else"):
        assert phi not in log, f"{phi} reached the server log"
    if db_url.startswith("sqlite"):
        kept = Path(str(make_url(db_url).database) + ".secret")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600

    verified = subprocess.run(
        [sys.executable, "-m", "caretally.cli.main", "audit", "verify", "--db", db_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stderr
    assert "north:" in verified.stdout and "chain intact" in verified.stdout
