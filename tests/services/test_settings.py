"""Settings are validated at start with one line; the embedded default keeps its own secret."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from caretally.api.settings import SettingsError, load_settings, resolve_secret, secret_file


@pytest.mark.parametrize(
    "secret, fragment",
    [
        ("too-short-1234", "at least 32 characters"),
        ("changethis-changethis-changethis-changethis", "placeholder"),
        ("a" * 40, "placeholder"),
    ],
)
def test_weak_secrets_are_refused_with_one_line(secret: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(secret_key=secret)
    assert "CARETALLY_SECRET_KEY" in caught.value.message and fragment in caught.value.message
    assert "\n" not in caught.value.message
    assert caught.value.hint and "token_urlsafe" in caught.value.hint


def test_variables_are_read_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARETALLY_PORT", "9001")
    monkeypatch.setenv("CARETALLY_SESSION_IDLE_MINUTES", "5")
    assert load_settings().port == 9001
    assert load_settings(port=9002).port == 9002
    assert load_settings().session_idle_minutes == 5
    monkeypatch.setenv("CARETALLY_PORT", "not-a-port")
    with pytest.raises(SettingsError, match="CARETALLY_PORT"):
        load_settings()


def test_sqlite_default_makes_a_private_secret_once_and_keeps_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'caretally.db'}"
    settings = load_settings(database_url=url)
    first = resolve_secret(settings, url)
    path = secret_file(url)
    assert path == tmp_path / "caretally.db.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_secret(settings, url) == first
    assert len(first) >= 32
    path.chmod(0o644)
    with pytest.raises(SettingsError, match="can be read by other users"):
        resolve_secret(settings, url)


def test_a_server_database_needs_a_configured_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARETALLY_SECRET_KEY", raising=False)
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/whatever"
    with pytest.raises(SettingsError, match="CARETALLY_SECRET_KEY"):
        resolve_secret(load_settings(database_url=url), url)
    strong = "Vb7Nq2Xk9Lm4Tr8Wz1Hc6Jd3Fs5Gp0Ya"
    assert resolve_secret(load_settings(database_url=url, secret_key=strong), url) == strong


def test_serve_refuses_a_placeholder_secret_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from caretally.cli.main import run

    monkeypatch.setenv("CARETALLY_SECRET_KEY", "changethis")
    with pytest.raises(SystemExit) as stopped:
        run(["serve", "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("caretally: setting secret_key (CARETALLY_SECRET_KEY):")
    assert lines[1].startswith("hint: generate one")
