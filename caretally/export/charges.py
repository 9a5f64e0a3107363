"""The practice's charge on each claim line, which an X12 or FHIR claim must state.

The month run stores a charge on every line, but when it was billed without a fee schedule
that charge is only the expected payment, a stand-in. The practice file's ``[fees]`` is
the practice's own price, so it replaces such a stand-in; a charge the run took from a
fee schedule given at bill time is what was billed and locked, so it stays. A line left
with no charge from any source cannot go on a claim, and the export names every such code
at once so the practice fixes its fee schedule in one edit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal

from caretally.errors import Problem
from caretally.export.claims import ExportError
from caretally.model import ClaimLine, PracticeIdentity

_CENT = Decimal("0.01")


def resolve_charges(
    lines: Sequence[ClaimLine],
    practice: PracticeIdentity,
    billed_fee_codes: Collection[str] = (),
    *,
    producer: str = "export",
) -> list[ClaimLine]:
    """Lines with the charge a claim states; raises listing the codes that have none.

    ``billed_fee_codes`` are the codes the run priced from a bill-time fee schedule.
    Practice fees are per unit, like the bill-time fee schedule.
    """
    out: list[ClaimLine] = []
    missing: set[str] = set()
    for line in lines:
        fee = practice.fee(line.code)
        if line.code in billed_fee_codes and line.charge > 0:
            out.append(line)
        elif fee is not None:
            charge = (fee * line.units).quantize(_CENT, rounding=ROUND_HALF_UP)
            out.append(replace(line, charge=charge))
        elif line.charge > 0:
            out.append(line)
        else:
            missing.add(line.code)
    if missing:
        raise ExportError(
            [
                Problem(
                    f"<{producer}>",
                    None,
                    "charge",
                    "no_charge",
                    f"no charge for code(s) {', '.join(sorted(missing))}: add each under [fees] in the "
                    "practice file (charge per unit), or bill with --fee-schedule",
                )
            ]
        )
    return out
