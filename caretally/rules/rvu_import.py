"""CMS's PPRRVU file → a cited layer of amounts and RVU parts on a Medicare rule-year.

The hand-entered amounts of a rule-year are estimates from secondary sources
(updates-2026-12.md §2); CMS's own relative value file is the authority. ``caretally
rules import-rvu FILE --year Y --release R`` reads the file in the layout CMS publishes
and writes, for every code the rule-year knows, its amount and RVU parts into an
imported layer (:mod:`caretally.rules.layers`), cited to that file and release. The
layer is stacked on the year by the loader like any other, so every decision priced by
it names ``cms/pprrvu26-b`` as the layer of its amount.

The file, as CMS publishes it (RVUyyX.zip → ``PPRRVUyy_<month>.csv``; from 2026 two
files, ``…_nonQPP.csv`` and ``…_QPP.csv``, which differ only in the conversion factor):

* a preamble of about nine lines (title, the AMA copyright notice for CPT), then the
  column headings, split over up to three rows (``WORK`` above ``RVU``, ``NON-FAC`` above
  ``PE RVU`` …); the last heading row starts with ``HCPCS``;
* one row per code and modifier: HCPCS, MOD, DESCRIPTION, STATUS CODE, NOT USED FOR
  MEDICARE PAYMENT, WORK RVU, NON-FAC PE RVU, NON-FAC NA INDICATOR, FACILITY PE RVU,
  FACILITY NA INDICATOR, MP RVU, NON-FACILITY TOTAL, FACILITY TOTAL, PCTC IND, GLOB
  DAYS, … (surgery indicators) …, CONV FACTOR, … (OPPS columns).

Columns are found by their heading, not their position (CMS has inserted columns
before). Only the global row of a code (no modifier) is read. Status codes A, R and T
are paid under the fee schedule: amount = non-facility total RVU × the rule-year's
non-QP conversion factor (the convention of the shipped files). Status C is carrier
priced: the layer makes the code explicitly unpriced (amount and RVU null). Any other
status (I, N, B, E, X …) is not separately payable and is unpriced too, and named.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

from caretally.errors import Problem
from caretally.rules.layers import resolve_rules_dir
from caretally.rules.loader import (
    RULESETS_ROOT,
    import_files,
    load_rule_files,
    rvu_total,
)
from caretally.rules.params import RuleYear

LAYER = "pprrvu"
CMS_PAGE = "https://www.cms.gov/medicare/payment/fee-schedules/physician/pfs-relative-value-files"
CODE = re.compile(r"^[0-9A-Z]{5}$")
RELEASE = re.compile(r"^[A-Z][A-Z0-9]{0,2}$")
#: Status codes paid under the fee schedule with national RVUs.
PRICED = frozenset({"A", "R", "T"})
STATUS_WORDS = {
    "A": "active",
    "B": "bundled into other services",
    "C": "carrier-priced: the MAC sets the amount",
    "D": "deleted",
    "E": "excluded from the fee schedule by regulation",
    "I": "not valid for Medicare",
    "M": "measurement code",
    "N": "non-covered",
    "P": "bundled or excluded",
    "R": "restricted coverage",
    "T": "paid only without another paid service",
    "X": "statutory exclusion",
}
CENT = Decimal("0.01")


@dataclass(frozen=True)
class RvuRow:
    """One code's global row (no modifier), as the file gives it."""

    code: str
    line: int
    description: str
    status: str
    cells: dict[str, str]


@dataclass
class RvuFile:
    path: Path
    sha256: str
    rows: dict[str, RvuRow]
    data_rows: int
    modifier_rows: int
    columns: dict[str, int]


def _cells(data: bytes) -> list[list[str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # older CMS files are Windows-1252/Latin-1
    return list(csv.reader(io.StringIO(text)))


def _norm(text: str) -> str:
    return " ".join(text.upper().replace("\n", " ").split())


#: Column → how its (joined) heading reads. Headings vary a little across years.
COLUMNS: dict[str, Callable[[str], bool]] = {
    "hcpcs": lambda h: h.endswith("HCPCS"),
    "modifier": lambda h: h in ("MOD", "MODIFIER") or h.endswith(" MOD"),
    "description": lambda h: "DESCRIPTION" in h,
    "status": lambda h: "STATUS" in h,
    "work": lambda h: "WORK" in h and "RVU" in h and "OPPS" not in h,
    "pe_nonfacility": lambda h: h.startswith("NON-FAC") and "PE" in h and "RVU" in h and "OPPS" not in h,
    "mp": lambda h: (h.startswith("MP") or "MALPRACTICE" in h) and "RVU" in h and "OPPS" not in h,
    "total": lambda h: h.startswith("NON-FAC") and "TOTAL" in h,
    "conversion_factor": lambda h: "CONV" in h and "FACTOR" in h,
}
REQUIRED = ("hcpcs", "status", "work", "pe_nonfacility", "mp", "total")


def read_pprrvu(path: Path) -> tuple[RvuFile | None, list[Problem]]:
    """The file's global rows by code; every problem that makes it unusable, at once."""
    shown = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [
            Problem(shown, None, None, "unreadable", f"cannot read the file: {exc.strerror or exc}")
        ]
    rows = _cells(data)
    start = next((i for i, r in enumerate(rows) if r and _norm(r[0]) == "HCPCS"), None)
    if start is None:
        return None, [
            Problem(
                shown,
                None,
                None,
                "not_pprrvu",
                "no heading row starting with HCPCS: this is not CMS's PPRRVU file in its CSV layout",
                hint="use PPRRVUyy_<month>.csv (or _nonQPP.csv) from the RVUyyX zip on the CMS PFS "
                "relative value files page",
            )
        ]
    # Headings are split over the heading row and the rows above it whose first cell is
    # empty (the preamble's text rows have text there).
    above = []
    for r in reversed(rows[max(0, start - 3) : start]):
        if not r or (r[0].strip() and _norm(r[0]) != "HCPCS"):
            break
        above.insert(0, r)
    width = max(len(r) for r in [*above, rows[start]])
    headings = [
        _norm(" ".join(r[i] for r in [*above, rows[start]] if i < len(r) and r[i].strip()))
        for i in range(width)
    ]
    columns: dict[str, int] = {}
    for name, matches in COLUMNS.items():
        found = [i for i, h in enumerate(headings) if h and matches(h)]
        if found:
            columns[name] = found[0]
    missing = [n for n in REQUIRED if n not in columns]
    if missing:
        return None, [
            Problem(
                shown,
                start + 1,
                None,
                "not_pprrvu",
                f"no column for {', '.join(missing)} among the headings "
                f"({'; '.join(h for h in headings if h)})",
            )
        ]
    problems: list[Problem] = []
    found_rows: dict[str, RvuRow] = {}
    data_rows = modifier_rows = 0
    for number, r in enumerate(rows[start + 1 :], start=start + 2):
        code = r[columns["hcpcs"]].strip().upper() if len(r) > columns["hcpcs"] else ""
        if not CODE.match(code):
            continue  # blank rows and the notes CMS sometimes puts at the end
        data_rows += 1
        mod = r[columns["modifier"]].strip() if "modifier" in columns and len(r) > columns["modifier"] else ""
        if mod:
            modifier_rows += 1
            continue
        if code in found_rows:
            problems.append(
                Problem(
                    shown,
                    number,
                    "HCPCS",
                    "duplicate_code",
                    f"{code} has a second row without a modifier (first on line {found_rows[code].line})",
                )
            )
            continue
        cells = {n: (r[i].strip() if i < len(r) else "") for n, i in columns.items()}
        found_rows[code] = RvuRow(code, number, cells.get("description", ""), cells["status"].upper(), cells)
    if not found_rows and not problems:
        problems.append(Problem(shown, start + 1, None, "not_pprrvu", "no code rows after the headings"))
    if problems:
        return None, problems
    digest = hashlib.sha256(data).hexdigest()
    return RvuFile(path, digest, found_rows, data_rows, modifier_rows, columns), []


def _number(row: RvuRow, name: str, file: str, problems: list[Problem]) -> Decimal | None:
    text = row.cells.get(name, "").replace(",", "")
    if not text:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        problems.append(
            Problem(file, row.line, name, "bad_number", f"{row.code}: {name} {text!r} is not a number")
        )
        return None


@dataclass(frozen=True)
class CodeImport:
    """What the import does to one code of the rule-year."""

    code: str
    status: str  # the file's status code, or "" when the code is not in the file
    before: Decimal | None
    after: Decimal | None
    total: Decimal | None
    note: str
    in_file: bool = True

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "status": self.status or None,
            "in_file": self.in_file,
            "amount_before": None if self.before is None else str(self.before),
            "amount_after": None if self.after is None else str(self.after),
            "total_rvu": None if self.total is None else str(self.total),
            "note": self.note,
        }


@dataclass
class RvuImport:
    """The layer written, and what it changes (``caretally rules import-rvu``)."""

    path: Path
    year: int
    release: str
    title: str
    layer: str
    sha256: str
    conversion_factor: Decimal
    file_conversion_factors: tuple[str, ...]
    codes: list[CodeImport] = field(default_factory=list)
    replaced: str | None = None
    extended_by: tuple[int, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "ok": True,
            "path": str(self.path),
            "year": self.year,
            "release": self.release,
            "title": self.title,
            "layer": self.layer,
            "sha256": self.sha256,
            "conversion_factor": str(self.conversion_factor),
            "file_conversion_factors": list(self.file_conversion_factors),
            "replaced": self.replaced,
            "years_deriving_from_it": list(self.extended_by),
            "codes": [c.to_json() for c in self.codes],
        }


class ImportRefused(Exception):
    """The file cannot become a layer; ``problems`` says why (every one, at once)."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def _year_without_layer(year: int, rules_dir: Path, target: Path) -> tuple[RuleYear, list[RuleYear]]:
    """The Medicare rule-year ``year`` built from the shipped files and every imported
    layer except the one being replaced (which may be the reason for the import)."""
    paths = sorted((RULESETS_ROOT / "medicare").glob("*.yaml"))
    layers = [p for p in import_files(rules_dir, "medicare") if p.resolve() != target.resolve()]
    years, problems = load_rule_files([*paths, *layers])
    if problems:
        raise ImportRefused(problems)
    medicare = [y for y in years if y.payer == "medicare"]
    chosen = [y for y in medicare if y.year == year]
    if not chosen:
        have = ", ".join(str(y.year) for y in medicare)
        raise ImportRefused(
            [
                Problem(
                    "<import>",
                    None,
                    "year",
                    "unknown_rule_year",
                    f"no Medicare rule-year {year} (have {have})",
                )
            ]
        )
    return chosen[0], medicare


def import_rvu(path: Path, year: int, release: str, *, rules_dir: Path | None = None) -> RvuImport:
    """Read CMS's PPRRVU ``path`` and write it as the ``pprrvu`` layer of Medicare ``year``.

    Refused (``ImportRefused``, nothing written) when the file is not in CMS's layout,
    its conversion factor is neither of the year's (the wrong year's file), a known
    code's row has a bad number, or the written layer would not load.
    """
    release = release.strip().upper()
    if not RELEASE.match(release):
        raise ImportRefused(
            [
                Problem(
                    "<import>", None, "release", "bad_release", f"release {release!r} is not like A, B, C, D"
                )
            ]
        )
    folder = resolve_rules_dir(rules_dir)
    target = folder / "medicare" / str(year) / f"{LAYER}.yaml"
    rvu, problems = read_pprrvu(path)
    if rvu is None:
        raise ImportRefused(problems)
    base, all_years = _year_without_layer(year, folder, target)
    cf = Decimal(str(base.globals["conversion_factor"].value))
    qp = base.globals.get("conversion_factor_qp")
    allowed = {cf} | ({Decimal(str(qp.value))} if qp is not None else set())
    file_cfs: set[str] = set()
    for code in base.codes:
        row = rvu.rows.get(code)
        if row is not None and row.cells.get("conversion_factor"):
            file_cfs.add(row.cells["conversion_factor"])
    mismatched = sorted(v for v in file_cfs if _decimal(v) not in allowed)
    shown = str(path)
    if mismatched:
        problems.append(
            Problem(
                shown,
                None,
                "CONV FACTOR",
                "conversion_factor_mismatch",
                f"the file's conversion factor {', '.join(mismatched)} is not {year}'s "
                f"({', '.join(str(v) for v in sorted(allowed))}): is it another year's file?",
                hint=f"import it with the --year it belongs to; for a year that became final, enter the "
                f"final conversion factors in rulesets/medicare/{year}.yaml first",
            )
        )
    yy = f"{year % 100:02d}"
    key = f"cms-pprrvu{yy}-{release.lower()}"
    title = f"CMS PPRRVU{yy} release {release}"
    source = (
        f"CMS PFS relative value file RVU{yy}{release} ({title}), {path.name}, "
        f"sha256 {rvu.sha256[:16]} — {CMS_PAGE}"
    )
    lines = [
        "# Imported by `caretally rules import-rvu` from CMS's PPRRVU file. Do not edit by hand:",
        "# import a newer release instead (it replaces this file). `caretally rules check` checks it.",
        f"layer: {LAYER}",
        "ruleset: medicare",
        f"year: {year}",
        f"release: {_q(release)}",
        f"title: {_q(title)}",
        "imported_from:",
        f"  file: {_q(path.name)}",
        f"  sha256: {_q(rvu.sha256)}",
        f"  conversion_factor: {_q(', '.join(sorted(file_cfs)) or 'not given')}",
        f"  rows: {_q(str(rvu.data_rows))}",
        "sources:",
        f"  {key}: {_q(source)}",
        "codes:",
    ]
    current = {c: rule.amount for c, rule in base.codes.items()}
    changes: list[CodeImport] = []
    for code in sorted(base.codes):
        row = rvu.rows.get(code)
        if row is None:
            changes.append(
                CodeImport(
                    code, "", current[code], current[code], None, "not in the file: keeps its value", False
                )
            )
            continue
        status = row.status
        words = STATUS_WORDS.get(status, "unknown status")
        nums = {n: _number(row, n, shown, problems) for n in ("work", "pe_nonfacility", "mp", "total")}
        parts = {n: v for n, v in nums.items() if v is not None}
        total = nums["total"] if nums["total"] is not None else rvu_total(parts)
        lines.append(f"  {_q(code)}:")
        lines.append("    params:")
        if status in PRICED and total is not None and total > 0:
            amount = (total * cf).quantize(CENT, rounding=ROUND_HALF_UP)
            doc = f"status {status} ({words}): {total} non-facility total RVU × CF {cf}"
            lines.append(f"      amount: {{value: {_q(str(amount))}, cite: {key}, doc: {_q(doc)}}}")
            rvu_items = ", ".join(f"{n}: {_q(format(v, 'f'))}" for n, v in parts.items())
            lines.append(f"      rvu: {{value: {{{rvu_items}}}, cite: {key}}}")
            changes.append(CodeImport(code, status, current[code], amount, total, doc))
        else:
            why = f"status {status} ({words})"
            if status in PRICED:
                why += ": no non-facility RVU in the file"
            doc = f"{why}: no national amount; expected payment is $0.00, flagged"
            lines.append(f"      amount: {{value: null, cite: {key}, doc: {_q(doc)}}}")
            lines.append(f"      rvu: {{value: null, cite: {key}}}")
            changes.append(CodeImport(code, status, current[code], None, total, doc))
    if problems:
        raise ImportRefused(problems)
    text = "\n".join(lines) + "\n"
    replaced = None
    if target.exists():
        old = re.search(r'^title: "(.*)"$', target.read_text(encoding="utf-8"), re.M)
        replaced = old.group(1) if old else target.name
    _write_checked(target, text, folder)
    extended = tuple(y.year for y in all_years if y.year != year and f"medicare/{year}" in y.layers)
    return RvuImport(
        path=target,
        year=year,
        release=release,
        title=title,
        layer=f"cms/{LAYER}{yy}-{release.lower()}",
        sha256=rvu.sha256,
        conversion_factor=cf,
        file_conversion_factors=tuple(sorted(file_cfs)),
        codes=changes,
        replaced=replaced,
        extended_by=extended,
    )


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


def _write_checked(target: Path, text: str, folder: Path) -> None:
    """Write the layer only if the rule-years load with it, and atomically, so a reader
    (a running service) never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staged = tempfile.mkstemp(prefix=".pprrvu-", suffix=".yaml.part", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        paths = sorted((RULESETS_ROOT / "medicare").glob("*.yaml"))
        others = [p for p in import_files(folder, "medicare") if p.resolve() != target.resolve()]
        _, problems = load_rule_files([*paths, *others, Path(staged)])
        if problems:
            raise ImportRefused(problems)
        os.replace(staged, target)
    finally:
        if os.path.exists(staged):
            os.unlink(staged)


def changed(codes: Sequence[CodeImport]) -> list[CodeImport]:
    """The codes whose amount the import changes (a newly unpriced code included)."""
    return [c for c in codes if c.in_file and c.before != c.after]
