"""One error shape for every stage: where, what, a stable code, and the offending input.

Ingest, the rule loader and the CLI all report problems as ``Problem`` values and keep
going, so a single pass shows every fault; the same objects print as
``file:line: field: message`` or serialise to JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int | None
    field: str | None
    code: str  # stable, machine-readable, e.g. "naive_timestamp"
    message: str
    row: dict[str, Any] | None = field(default=None, compare=False)

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ProblemsError(Exception):
    """Raised by a stage that cannot go on; carries every problem found so far."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
