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
    #: RFC 6901 JSON pointer into a JSON request body (``/3/measured_at``), for problems
    #: found in live ingest; ``None`` for files, where ``file`` and ``line`` say where.
    pointer: str | None = None

    def __str__(self) -> str:
        if self.pointer is not None:
            return f"{self.file} {self.pointer or '(body)'}: {self.message}"
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.pointer is None:
            del out["pointer"]  # the documented shape of file problems stays as it was
        return out


class ProblemsError(Exception):
    """Raised by a stage that cannot go on; carries every problem found so far."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
