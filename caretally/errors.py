"""One error shape for every stage: where, what, a stable code, and the offending input.

Ingest, the rule loader and the CLI all report problems as ``Problem`` values and keep
going, so a single pass shows every fault; the same objects print as
``file:line: field: message`` or serialise to JSON.

A request that is refused as a whole (lock a month with no run, export a run that
corrects nothing, bill while another run holds the month) is one ``Problem`` too, raised
inside a ``Refusal`` so the service layer's callers — CLI and API alike — get the value,
never a bare string.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Problem fields that only some problems carry; left out of the JSON when unset, so the
#: shape of every problem made before they existed is unchanged.
_OPTIONAL = ("hint", "run_id", "month", "pointer")


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int | None
    field: str | None
    code: str  # stable, machine-readable, e.g. "naive_timestamp"
    message: str
    row: dict[str, Any] | None = field(default=None, compare=False)
    #: What the person can do about it (a refusal's next step).
    hint: str | None = field(default=None, compare=False)
    #: The stored run and the month a run or export problem is about.
    run_id: str | None = None
    month: str | None = None
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
        # Optional keys appear only when set, so the documented shape of file problems stays.
        for name in _OPTIONAL:
            if out[name] is None:
                del out[name]
        return out


class ProblemsError(Exception):
    """Raised by a stage that cannot go on; carries every problem found so far."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


#: Exit status of a refusal: the request was refused as asked (1), or the settings it
#: came with cannot be used (2) — the CLI's two failure statuses.
REFUSED, UNUSABLE_SETTINGS = 1, 2


class Refusal(Exception):
    """A request refused as a whole; ``problem`` says why and what to do, ``exit_code`` how bad.

    Services raise a subclass named for their stage (``RunError``, ``ExportRefused`` …);
    callers catch ``Refusal`` and show ``problem`` — one line plus its hint, or its JSON.
    """

    def __init__(self, problem: Problem, exit_code: int = REFUSED):
        super().__init__(problem.message)
        self.problem = problem
        self.exit_code = exit_code

    def to_json(self) -> dict[str, Any]:
        """The body a ``--json`` caller (or the API) gets: the same shape as a run's problems."""
        return {"ok": False, "problems": [self.problem.to_json()]}
