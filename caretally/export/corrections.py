"""An amendment run as corrections to the claims of the locked run it amends.

The locked run's claims have been sent; sending the whole month again would duplicate
them. So only what changed goes out: a claim that is new is an original (frequency 1), a
changed one replaces the claim sent (7) and a claim that disappeared is voided (8); both
corrections name the claim they correct in ``REF*F8``. Payers match that reference against
their own claim number (ICN/DCN) when they issued one, which the practice records from the
remittance (835) or claim acknowledgement (277CA) in a small CSV; without it our claim id,
the patient control number they echo back, is the reference.

A correction cannot move a claim to another payer or subscriber, so such a change is a void
of the old claim and a new original.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from caretally.errors import Problem, ProblemsError
from caretally.export.claims import Claim

ORIGINAL, REPLACEMENT, VOID = "1", "7", "8"
CLAIM_NUMBER_COLUMNS = ("claim_id", "payer_claim_number")


def _content(claim: Claim) -> tuple[object, ...]:
    # What the payer saw; the run id differs between runs by definition.
    return (
        claim.payer,
        claim.member_id,
        claim.route.label if claim.route else None,
        tuple(replace(line, run_id="") for line in claim.lines),
    )


def corrections(
    locked: Sequence[Claim], current: Sequence[Claim], claim_numbers: Mapping[str, str]
) -> list[Claim]:
    """The claims to send so the payer's records match ``current``; unchanged ones are left out."""
    before = {c.claim_id: c for c in locked}
    after = {c.claim_id: c for c in current}
    out: list[Claim] = []
    for claim_id in sorted(before.keys() | after.keys()):
        old, new = before.get(claim_id), after.get(claim_id)
        reference = claim_numbers.get(claim_id, claim_id)
        if old is None:
            assert new is not None
            out.append(replace(new, frequency=ORIGINAL, original_reference=None))
        elif new is None:
            out.append(replace(old, frequency=VOID, original_reference=reference))
        elif _content(old) == _content(new):
            continue
        elif (old.payer, old.member_id, old.route) != (new.payer, new.member_id, new.route):
            out.append(replace(old, frequency=VOID, original_reference=reference))
            out.append(replace(new, frequency=ORIGINAL, original_reference=None))
        else:
            out.append(replace(new, frequency=REPLACEMENT, original_reference=reference))
    return out


def load_claim_numbers(path: Path) -> dict[str, str]:
    """``claim_id,payer_claim_number`` CSV → mapping; a later row for a claim id wins.

    A billing office appends a row whenever a remittance gives a claim a (new) number, so
    the last row is the number the payer holds now.
    """
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ProblemsError(
            [Problem(where, None, None, "not_found", "claim numbers file not found")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        message = f"cannot read the claim numbers file: {exc}"
        raise ProblemsError([Problem(where, None, None, "unreadable", message)]) from None
    problems: list[Problem] = []
    numbers: dict[str, str] = {}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in CLAIM_NUMBER_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        message = f"missing column(s) {', '.join(missing)}; expected {','.join(CLAIM_NUMBER_COLUMNS)}"
        raise ProblemsError([Problem(where, 1, None, "missing_column", message)])
    for number, row in enumerate(reader, start=2):
        claim_id = (row.get("claim_id") or "").strip()
        value = (row.get("payer_claim_number") or "").strip()
        if not claim_id or not value:
            field = "claim_id" if not claim_id else "payer_claim_number"
            problems.append(Problem(where, number, field, "missing", "is required"))
            continue
        if len(value) > 50 or any(c in value for c in "*~:^"):
            message = "must be at most 50 characters without * ~ : ^ (it goes into REF*F8)"
            problems.append(Problem(where, number, "payer_claim_number", "invalid", message))
            continue
        numbers[claim_id] = value
    if problems:
        raise ProblemsError(problems)
    return numbers
