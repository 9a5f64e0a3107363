"""``caretally import``'s new options through the real command: clock skew, unknown files, warnings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from caretally.cli.main import build_app
from tests.ingest.bundles import valid_bundle, with_row, write_csv

ORG = "clinic"
runner = CliRunner()


def test_max_clock_skew_is_hours_past_the_real_clock(tmp_path: Path, sqlite_url: str) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    folder = write_csv(tmp_path / "b", with_row(valid_bundle(), "readings", 3, measured_at=soon))
    app = build_app()
    base = ["import", str(folder), "--db", sqlite_url, "--org", ORG, "--json"]
    refused = runner.invoke(app, [*base, "--max-clock-skew", "1"])
    assert refused.exit_code == 1
    assert [p["code"] for p in json.loads(refused.stdout)["problems"]] == ["future_reading"]
    accepted = runner.invoke(app, [*base, "--max-clock-skew", "3"])
    assert accepted.exit_code == 0, accepted.stdout
    assert runner.invoke(app, [*base, "--max-clock-skew", "-1"]).exit_code == 2


def test_unknown_file_and_warnings_in_text_output(tmp_path: Path, sqlite_url: str) -> None:
    bundle = with_row(valid_bundle(), "patients", 0, city="Aus\u200btin")
    folder = write_csv(tmp_path / "b", bundle)
    (folder / "Readings.CSV").write_text("x\n")
    app = build_app()
    base = ["import", str(folder), "--db", sqlite_url, "--org", ORG]
    refused = runner.invoke(app, base)
    assert refused.exit_code == 1
    assert (
        "Readings.CSV: Readings.CSV is not a file caretally knows; did you mean readings.csv?"
        in refused.output
    )
    done = runner.invoke(app, [*base, "--ignore-unknown-files"])
    assert done.exit_code == 0, done.output
    assert "Readings.CSV: warning: Readings.CSV was not read" in done.output
    assert "patients.csv:2: city: warning: removed 1 invisible character(s) (U+200B)" in done.output
    assert "Imported, with 2 warning(s)." in done.output


def test_cli_defaults_match_the_library() -> None:
    from caretally import leakage
    from caretally.cli import import_cmd, leakage_cmd
    from caretally.ingest.pipeline import DEFAULT_CLOCK_SKEW

    assert DEFAULT_CLOCK_SKEW.total_seconds() == import_cmd.DEFAULT_SKEW_HOURS * 3600
    assert (leakage_cmd.DAYS_WINDOW, leakage_cmd.MINUTES_WINDOW) == (
        leakage.DAYS_WINDOW,
        leakage.MINUTES_WINDOW,
    )
