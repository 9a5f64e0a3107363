"""The outcome of one import: counts per file, every problem, and whether anything was stored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from caretally.errors import Problem
from caretally.ingest.staging import Change


@dataclass
class FileCounts:
    """Rows per outcome for one file (keyed by stem, so CSV and JSON bundles compare).

    ``read`` = ``inserted + unchanged + updated + rejected`` when the bundle was stored
    (for retractions, ``deleted + unchanged + rejected``, a repeated retraction being unchanged);
    when an all-or-nothing import is refused only ``read`` and ``rejected`` are non-zero.
    """

    read: int = 0
    inserted: int = 0
    unchanged: int = 0
    updated: int = 0
    rejected: int = 0
    deleted: int = 0  # retractions only

    def to_json(self, *, with_deleted: bool = False) -> dict[str, int]:
        """The counts; ``deleted`` only for retractions, the one file that deletes."""
        out = asdict(self)
        if not with_deleted:
            del out["deleted"]
        return out


@dataclass(frozen=True, slots=True)
class RejectedRow:
    stem: str
    where: str  # "readings.csv:12" or "bundle.json:readings[3]"
    raw: Mapping[str, Any]
    errors: tuple[str, ...]


@dataclass
class ImportReport:
    counts: dict[str, FileCounts]
    problems: list[Problem]
    stored: bool
    batch_id: str | None
    source: str = ""
    rejected_rows: list[RejectedRow] = field(default_factory=list)
    rejects_written: list[Path] = field(default_factory=list)
    #: Accepted but worth a look (invisible characters removed, overlapping time …);
    #: warnings never refuse a bundle nor change the exit status.
    warnings: list[Problem] = field(default_factory=list)
    #: Live imports only (``live=True``): stem → source line → ``inserted``, ``updated``,
    #: ``unchanged`` or ``retracted``, and per table stem the records inserted, updated or
    #: retracted (``Change.old``/``new`` as stored), from which touched months are derived.
    outcomes: dict[str, dict[int, str]] = field(default_factory=dict)
    changes: dict[str, tuple[Change, ...]] = field(default_factory=dict)

    def ok(self) -> bool:
        """True when the bundle had no problem at all (nothing rejected, nothing refused)."""
        return not self.problems

    @property
    def changed(self) -> bool:
        return self.stored and any(c.inserted or c.updated for c in self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok(),
            "stored": self.stored,
            "batch_id": self.batch_id,
            "source": self.source,
            "counts": {
                stem: c.to_json(with_deleted=stem == "retractions") for stem, c in self.counts.items()
            },
            "problems": [p.to_json() for p in self.problems],
            "warnings": [w.to_json() for w in self.warnings],
            "rejects": [str(p) for p in self.rejects_written],
        }
