"""Prices of claim lines: expected payment and charge, rounded to cents in one place.

Expected payment is what the payer is likely to allow: by default the national
non-facility amount in the rule-year; when the practice names its Medicare locality and
the rule-year has the code's RVU components, RVUs × GPCIs × conversion factor instead.
The charge is what the practice bills: its own fee schedule when it has one, else the
expected payment. All arithmetic is ``Decimal``; ``cents`` is the only rounding.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

from caretally.errors import Problem, ProblemsError
from caretally.rules.layers import gpci_path
from caretally.rules.params import CodeRule, RuleYear

CENT = Decimal("0.01")
GPCI_DIR = Path(__file__).parent / "data" / "gpci"


def cents(amount: Decimal) -> Decimal:
    """The one rounding rule for money: half-up to the cent."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class Gpci:
    year: int
    state: str
    locality: str
    name: str
    work: Decimal
    pe: Decimal
    mp: Decimal
    source: str


def gpci_years() -> list[int]:
    """Years with GPCIs: shipped, or imported into the rules folder (``rules import-gpci``)."""
    imported = gpci_path(0).parent
    found = {int(p.stem) for p in GPCI_DIR.glob("*.csv")}
    if imported.is_dir():
        found |= {int(p.stem) for p in imported.glob("*.csv") if p.stem.isdigit()}
    return sorted(found)


def load_gpci(year: int, locality: str, path: Path | None = None) -> Gpci:
    """The GPCIs of ``locality`` (``ST-NN``, e.g. ``CO-01``) for ``year``.

    ``path`` (``--gpci``) first; else the CMS file imported for ``year`` into the rules
    folder (``caretally rules import-gpci``); else the years shipped in
    ``billing/data/gpci`` (CMS Addendum E, same layout).
    """
    imported = gpci_path(year)
    source = path or (imported if imported.is_file() else GPCI_DIR / f"{year}.csv")
    if not source.exists():
        have = ", ".join(str(y) for y in gpci_years()) or "none"
        raise ProblemsError(
            [
                Problem(
                    str(source),
                    None,
                    "locality",
                    "gpci_year_missing",
                    f"no GPCI file for {year} (have: {have}); import CMS's GPCI{year} file with "
                    f"`caretally rules import-gpci FILE --year {year}` or give it with --gpci",
                )
            ]
        )
    state, _, number = locality.upper().partition("-")
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    for row in csv.DictReader(lines):
        if row["state"] == state and row["locality"] == number.zfill(2):
            return Gpci(
                year,
                state,
                row["locality"],
                row["name"],
                Decimal(row["work"]),
                Decimal(row["pe"]),
                Decimal(row["mp"]),
                f"{source.name}{' (imported)' if source == imported else ''}: CMS GPCIs, "
                f"locality {state}-{row['locality']}",
            )
    raise ProblemsError(
        [
            Problem(
                str(source),
                None,
                "locality",
                "unknown_locality",
                f"locality {locality} is not in {source.name}",
            )
        ]
    )


def load_fee_schedule(path: Path) -> dict[str, Decimal]:
    """A practice fee schedule: CSV with ``code,charge`` (charge per unit, dollars)."""
    problems: list[Problem] = []
    fees: dict[str, Decimal] = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"code", "charge"} - set(reader.fieldnames or [])
        if missing:
            raise ProblemsError(
                [
                    Problem(
                        str(path), 1, None, "missing_column", f"missing columns: {', '.join(sorted(missing))}"
                    )
                ]
            )
        for line, row in enumerate(reader, start=2):
            code = (row.get("code") or "").strip()
            try:
                charge = Decimal((row.get("charge") or "").strip())
                if charge < 0 or charge.as_tuple().exponent < -2:  # type: ignore[operator]
                    raise InvalidOperation
            except InvalidOperation:
                problems.append(
                    Problem(str(path), line, "charge", "bad_money", f"{row.get('charge')!r} is not an amount")
                )
                continue
            if code in fees:
                problems.append(Problem(str(path), line, "code", "duplicate_code", f"{code} listed twice"))
            fees[code] = charge
    if problems:
        raise ProblemsError(problems)
    return fees


@dataclass(frozen=True, slots=True)
class Pricing:
    """How a run prices lines: national (default), or by locality; charges by fee schedule."""

    locality: str | None = None
    qualifying_apm: bool = False
    fee_schedule: Mapping[str, Decimal] = field(default_factory=dict)
    gpci_path: Path | None = None


@dataclass(frozen=True, slots=True)
class Price:
    unit_payment: Decimal
    expected_payment: Decimal
    charge: Decimal
    basis: str  # plain words: where the figure came from


def _rvu_parts(rule: CodeRule) -> tuple[Decimal, Decimal, Decimal] | None:
    rvu = rule.get("rvu")
    if not isinstance(rvu, Mapping) or not {"work", "pe_nonfacility", "mp"} <= set(rvu):
        return None
    return Decimal(str(rvu["work"])), Decimal(str(rvu["pe_nonfacility"])), Decimal(str(rvu["mp"]))


def _rvu_total(rule: CodeRule) -> Decimal | None:
    rvu = rule.get("rvu")
    if isinstance(rvu, Mapping) and rvu.get("total") is not None:
        return Decimal(str(rvu["total"]))
    parts = _rvu_parts(rule)
    return None if parts is None else sum(parts, Decimal(0))


def _conversion_factor(year: RuleYear, qp: bool) -> Decimal:
    name = "conversion_factor_qp" if qp and "conversion_factor_qp" in year.globals else "conversion_factor"
    return Decimal(str(year.globals[name].value))


def price(rule: CodeRule, year: RuleYear, units: int, pricing: Pricing) -> Price:
    """Expected payment and charge for ``units`` of ``rule``'s code."""
    unit: Decimal | None = None
    basis = ""
    if pricing.locality:
        parts = _rvu_parts(rule)
        if parts is not None:
            gpci = load_gpci(year.year, pricing.locality, pricing.gpci_path)
            work, pe, mp = parts
            total = work * gpci.work + pe * gpci.pe + mp * gpci.mp
            cf = _conversion_factor(year, pricing.qualifying_apm)
            unit = cents(total * cf)
            basis = f"RVUs × GPCI ({gpci.source}) × CF {cf}"
        else:
            basis = f"national amount: {year.year} rule-year has no RVU components for {rule.code}; "
    if unit is None:
        amount, total = rule.amount, _rvu_total(rule)
        if pricing.qualifying_apm and total is not None:
            cf = _conversion_factor(year, True)
            unit = cents(total * cf)
            basis += f"total RVU {total} × qualifying-APM CF {cf}"
        elif amount is None:
            unit = Decimal("0.00")
            basis += "no national amount known (contractor-priced or not found)"
        else:
            unit = cents(amount)
            basis += f"national non-facility amount {year.payer}/{year.year}"
    expected = cents(unit * units)
    fee = pricing.fee_schedule.get(rule.code)
    charge = cents(fee * units) if fee is not None else expected
    return Price(unit, expected, charge, basis)
