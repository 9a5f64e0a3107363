"""The benchmark's small mode runs end to end and prints its table (no timing is asserted).

It runs as CI would run it (``python bench/run.py --patients 5000``), against PostgreSQL
when ``CARETALLY_TEST_POSTGRES_URL`` is set and with ``--skip-pg`` otherwise, writing its
results to a temporary file instead of bench/RESULTS.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_small_benchmark_completes_and_prints_the_table(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    command = [sys.executable, str(ROOT / "bench" / "run.py"), "--patients", "5000"]
    command += ["--results", str(results), "--workdir", str(tmp_path / "work")]
    pg = os.environ.get("CARETALLY_TEST_POSTGRES_URL")
    command += ["--pg-url", pg] if pg else ["--skip-pg"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "caretally benchmark: 5,000 patients" in out
    for step in ("synthesize", "import SQLite", "floor a: SQL facts SQLite", "bill 2026-03 SQLite"):
        assert step in out
    assert ("import PostgreSQL" in out) == bool(pg)
    if not pg:
        assert "--skip-pg" in out
    written = results.read_text()
    assert "Command: `python bench/run.py --patients 5000" in written
    assert "import SQLite" in written and "SQLite:" in written
