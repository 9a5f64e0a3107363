"""The benchmark's small mode runs end to end and prints its table (no timing is asserted).

It runs as CI would run it (``python bench/run.py --patients 1500``), against PostgreSQL
when ``CARETALLY_TEST_POSTGRES_URL`` is set and with ``--skip-pg`` otherwise, writing its
results to a temporary file instead of bench/RESULTS.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_small_benchmark_completes_and_prints_the_table(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    command = [sys.executable, str(ROOT / "bench" / "run.py"), "--patients", "1500"]
    command += ["--results", str(results), "--workdir", str(tmp_path / "work")]
    pg = os.environ.get("CARETALLY_TEST_POSTGRES_URL")
    command += ["--pg-url", pg] if pg else ["--skip-pg"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "caretally benchmark: 1,500 patients" in out
    for step in ("synthesize", "import SQLite", "floor a: SQL facts SQLite", "floor c: storing a run SQLite"):
        assert step in out
    assert "FAILED" not in out
    # one verdict line per target, each with its figure (the table may wrap long step names)
    for verdict in (
        r"bill 2026-03 SQLite --engine columnar: [\d.]+× floor a \(target ≤ 1.5×\)",
        r"bill 2026-03 SQLite --engine full: [\d.]+× floor a \(target ≤ 1.5×\)",
        r"incremental 2026-03 SQLite: [\d.]+% of the cold run \(target ≤ 5%\)",
        r"worklist cold 2026-03-20 SQLite: [\d.]+× floor a \(target ≤ 2.0×\)",
        r"worklist first page api SQLite: p95 \d+ ms \(target ≤ 200 ms\)",
        r"worklist shows a posted reading SQLite: [\d.]+ s \(target ≤ 5 s\)",
        r"import SQLite: [\d,]+ readings/s over the whole import \(target ≥ 200,000\)",
        r"peak memory of any step: [\d,]+ MB \(target ≤ 2,048 MB\)",
    ):
        assert re.search(verdict + " — (met|MISSED)", out), verdict
    assert ("import PostgreSQL" in out) == bool(pg)
    if not pg:
        assert "--skip-pg" in out
    written = results.read_text()
    assert "Command: `python bench/run.py --patients 1500" in written
    assert "import SQLite" in written and "SQLite:" in written
