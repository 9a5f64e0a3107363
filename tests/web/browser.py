"""Browser test harness: Debian's Chromium driven by Playwright, and real servers to point it at.

Chromium is the system package (``/usr/bin/chromium``; ``.ci/run`` installs it with
apt-get) — never ``playwright install``, which downloads a browser build. Without it the
browser tests skip and say why; with ``CARETALLY_TEST_REQUIRE_ALL=1`` (CI) they fail.

Servers are real processes on a free loopback port, awaited on a health URL:
``caretally_server(db_url)`` runs ``caretally serve --db URL --port N`` and waits for
``/healthz``; ``start_server`` runs any command the same way (the static-site tests use
``python -m http.server`` over pages rendered from a synthetic practice).

Tests find elements by role and accessible name (``get_by_role``, ``get_by_label``),
never by CSS class: a missing label or name is then a failing test.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import skip_or_fail

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM_ENV = "CARETALLY_CHROMIUM"
CHROMIUM_DEFAULT = "/usr/bin/chromium"
#: What the browser runs with: headless, and nothing that reaches the network on its own.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
VIEWPORT = {"width": 1280, "height": 900}


def find_chromium() -> str | None:
    """The Chromium to drive: ``$CARETALLY_CHROMIUM``, else Debian's, else ``chromium`` on PATH."""
    wanted = os.environ.get(CHROMIUM_ENV) or CHROMIUM_DEFAULT
    if os.path.isfile(wanted) and os.access(wanted, os.X_OK):
        return wanted
    return shutil.which("chromium")


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it; a race is unlikely on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(
    argv: Sequence[str],
    *,
    port: int,
    log: Path,
    health_path: str = "/healthz",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> Server:
    """Start ``argv`` (which must listen on 127.0.0.1:``port``) and wait until health answers 200.

    A process that exits, or does not answer in ``timeout`` seconds, fails the test with
    the tail of its output.
    """
    handle = log.open("wb")
    process = subprocess.Popen(
        list(argv), stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd, stdin=subprocess.DEVNULL
    )
    handle.close()
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            answer = httpx.get(server.url(health_path), timeout=2.0)
            if answer.status_code == 200:
                return server
            last = f"HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    server.stop()
    tail = "\n".join(server.output().splitlines()[-30:])
    pytest.fail(f"server {' '.join(argv[:4])} … did not become healthy ({last}); its output:\n{tail}")


def serve_command(db_url: str, port: int) -> list[str]:
    """``caretally serve --db URL --port N``, run by this interpreter."""
    return [sys.executable, "-m", "caretally.cli.main", "serve", "--db", db_url, "--port", str(port)]


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.setdefault("CARETALLY_SECRET_KEY", secrets.token_hex(32))
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------
# Fixtures (registered in tests/web/conftest.py)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        skip_or_fail(
            f"browser tests need Chromium at {os.environ.get(CHROMIUM_ENV) or CHROMIUM_DEFAULT} "
            f"(apt-get install chromium; or set {CHROMIUM_ENV})"
        )
    return path  # type: ignore[return-value]


@pytest.fixture(scope="session")
def browser(chromium: str) -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("browser tests need Playwright for Python (pip install -e '.[test]')")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, headless=True, args=list(CHROMIUM_ARGS))
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(10_000)
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture
def caretally_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``caretally_server(db_url, *extra_args)``: a real ``caretally serve`` on a loopback port."""
    started: list[Server] = []

    def start(db_url: str, *extra: str, env: dict[str, str] | None = None) -> Server:
        port = free_port()
        server = start_server(
            [*serve_command(db_url, port), *extra],
            port=port,
            log=tmp_path / f"serve-{port}.log",
            env=server_env(**(env or {})),
            cwd=tmp_path,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[Callable[[Path], Server]]:
    """``static_server(folder)``: ``python -m http.server`` over a folder (health: a ``healthz`` file)."""
    started: list[Server] = []

    def start(folder: Path) -> Server:
        (folder / "healthz").write_text("ok\n")
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(folder),
        ]
        server = start_server(argv, port=port, log=tmp_path / f"http-{port}.log", env=server_env())
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
