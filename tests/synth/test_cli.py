"""``caretally synth`` writes the bundle and prints a summary of rows per file."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from caretally.cli import synth_cmd
from tests.synth.bundle import STEMS, file_bytes, read_bundle


def _app() -> typer.Typer:
    # The command on its own: the test must not depend on every other command importing.
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """caretally (synth only)."""

    synth_cmd.register(app)
    return app


def test_synth_command_writes_a_bundle_and_summarises_it(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    args = [
        "synth",
        "--patients",
        "25",
        "--start",
        "2026-11-01",
        "--months",
        "1",
        "--seed",
        "4",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    bundle = read_bundle(out)
    assert len(bundle.rows["patients"]) == 25
    for stem in STEMS:
        assert f"{stem}.csv" in result.output
        assert f"{len(bundle.rows[stem]):,}" in result.output
    again = tmp_path / "again"
    assert CliRunner().invoke(_app(), [*args[:-1], str(again)]).exit_code == 0
    assert file_bytes(out) == file_bytes(again)


def test_synth_command_writes_jsonl_on_request(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = CliRunner().invoke(_app(), ["synth", "--patients", "5", "--format", "jsonl", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.jsonl" for s in STEMS)


def test_synth_command_rejects_bad_input(tmp_path: Path) -> None:
    for extra in (["--format", "xml"], ["--start", "2026-13-01"], ["--months", "0"]):
        result = CliRunner().invoke(
            _app(), ["synth", "--patients", "5", "--out", str(tmp_path / "x"), *extra]
        )
        assert result.exit_code != 0, extra
        assert not (tmp_path / "x" / "patients.csv").exists()


def test_the_command_is_registered_in_the_main_app() -> None:
    from caretally.cli.main import COMMAND_MODULES

    assert "caretally.cli.synth_cmd" in COMMAND_MODULES
