"""bench/compare.py runs both versions in interleaved pairs and records both figures.

The tree is compared with itself on a small practice (no timing is asserted): what is
checked is that each side ran from its own tree, every pair is reported with wall and CPU
seconds, and the block appended to the results file carries the command.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_compare_reports_every_pair_and_the_median(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    command = [sys.executable, str(ROOT / "bench" / "compare.py")]
    command += ["--before", str(ROOT), "--after", str(ROOT)]
    command += ["--patients", "60", "--pairs", "2", "--workdir", str(tmp_path / "work")]
    command += ["--results", str(results)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for n in (1, 2):
        assert re.search(rf"pair {n} before: [\d.]+ s wall, [\d.]+ s CPU", out)
        assert re.search(rf"pair {n} after: [\d.]+ s wall, [\d.]+ s CPU", out)
    rows = [line for line in out.splitlines() if re.match(r"\| (\d|median) \|", line)]
    assert len(rows) == 3, out
    written = results.read_text()
    assert "Command: `python bench/compare.py --before" in written
    assert "| median |" in written and "claim lines: before" in written
