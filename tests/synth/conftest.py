"""One mid-sized bundle shared by the realism tests (generated once per session).

1,500 patients over March–April 2026: enough for the proportions to be stable within a
few percent, and March holds the US spring-forward change.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from caretally.synth import SynthConfig, synthesize
from tests.synth.bundle import Bundle, read_bundle

PANEL = SynthConfig(patients=1500, start=date(2026, 3, 1), months=2, seed=20260301)


@pytest.fixture(scope="session")
def panel_counts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("panel")
    return out, synthesize(PANEL, out)


@pytest.fixture(scope="session")
def panel(panel_counts: tuple[Path, dict[str, int]]) -> Bundle:
    return read_bundle(panel_counts[0])
