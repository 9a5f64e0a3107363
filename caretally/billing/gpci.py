"""CMS's GPCI file → the geographic indices ``--locality`` pricing reads, per year.

caretally ships the CY2025 indices (``billing/data/gpci/2025.csv``). Newer years come
from CMS: ``caretally rules import-gpci FILE --year Y`` reads the file as CMS publishes
it (``GPCI20yy.csv`` in the RVUyyX zip, the same table as the final rule's Addendum E)
and writes it, in the shipped layout, to ``<rules folder>/gpci/<year>.csv``
(:mod:`caretally.rules.layers`), where :func:`caretally.billing.pricing.load_gpci`
finds it before the shipped files.

CMS's layout: a title row (``Addendum E. … Geographic Practice Cost Indices (GPCIs) by
State and Medicare Locality``), a blank row, then the headings ``Medicare Administrative
Contractor (MAC)``, ``State``, ``Locality Number``, ``Locality Name``, ``<year> PW GPCI
(without 1.0 Floor)`` (not in every year), ``<year> PW GPCI (with 1.0 Floor)``,
``<year> PE GPCI``, ``<year> MP GPCI``, one row per locality, and footnotes. Payment uses
the work GPCI *with* the floor. The year in the headings must be the ``--year`` given.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from caretally.errors import Problem
from caretally.rules.layers import GPCI_DIR, resolve_rules_dir

#: The shipped layout (and the written one): one row per locality.
FIELDS = ("mac", "state", "locality", "name", "work", "pe", "mp")
STATE = re.compile(r"^[A-Z]{2}$")
LOCALITY = re.compile(r"^\d{1,2}$")
INDEX = re.compile(r"^\d+(\.\d+)?$")


@dataclass(frozen=True)
class GpciRow:
    mac: str
    state: str
    locality: str
    name: str
    work: Decimal
    pe: Decimal
    mp: Decimal
    line: int


@dataclass
class GpciImport:
    path: Path
    year: int
    sha256: str
    rows: list[GpciRow] = field(default_factory=list)
    replaced: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "ok": True,
            "path": str(self.path),
            "year": self.year,
            "sha256": self.sha256,
            "localities": len(self.rows),
            "replaced": self.replaced,
        }


class GpciRefused(Exception):
    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _rows(data: bytes) -> list[list[str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return list(csv.reader(io.StringIO(text)))


def _norm(text: str) -> str:
    return " ".join(text.upper().split())


def read_cms_gpci(path: Path, year: int) -> tuple[list[GpciRow], list[Problem]]:
    """The localities of CMS's GPCI file; every problem at once."""
    shown = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [Problem(shown, None, None, "unreadable", f"cannot read the file: {exc.strerror or exc}")]
    rows = _rows(data)
    start = next(
        (i for i, r in enumerate(rows) if any("LOCALITY NUMBER" in _norm(c) for c in r)),
        None,
    )
    if start is None:
        return [], [
            Problem(
                shown,
                None,
                None,
                "not_gpci",
                "no heading row with 'Locality Number': this is not CMS's GPCI file in its CSV layout",
            )
        ]
    headings = [_norm(c) for c in rows[start]]

    def column(test: Callable[[str], bool]) -> int | None:
        return next((i for i, h in enumerate(headings) if test(h)), None)

    with_floor = column(lambda h: "PW GPCI" in h and "WITH 1.0" in h and "WITHOUT" not in h)

    found = {
        "mac": column(lambda h: "CONTRACTOR" in h or h == "MAC"),
        "state": column(lambda h: h == "STATE"),
        "locality": column(lambda h: "LOCALITY NUMBER" in h),
        "name": column(lambda h: "LOCALITY NAME" in h),
        "work": with_floor
        if with_floor is not None
        else column(lambda h: "PW GPCI" in h and "WITHOUT" not in h),
        "pe": column(lambda h: "PE GPCI" in h),
        "mp": column(lambda h: "MP GPCI" in h),
    }
    missing = [n for n, i in found.items() if i is None and n != "mac"]
    if missing:
        return [], [
            Problem(
                shown, start + 1, None, "not_gpci", f"no column for {', '.join(missing)} among the headings"
            )
        ]
    years = {m.group(1) for h in headings for m in [re.match(r"^(\d{4}) ", h)] if m}
    if years and years != {str(year)}:
        return [], [
            Problem(
                shown,
                start + 1,
                None,
                "gpci_year_mismatch",
                f"the headings are for {', '.join(sorted(years))}, not {year}",
                hint="give the --year the file is for",
            )
        ]
    out: list[GpciRow] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    for number, r in enumerate(rows[start + 1 :], start=start + 2):

        def cell(name: str, row: list[str] = r) -> str:
            i = found[name]
            return row[i].strip() if i is not None and i < len(row) else ""

        state, locality = cell("state").upper(), cell("locality")
        if not STATE.match(state) or not LOCALITY.match(locality):
            continue  # blank rows and footnotes
        values: dict[str, Decimal] = {}
        for name in ("work", "pe", "mp"):
            text = cell(name)
            try:
                if not INDEX.match(text):
                    raise InvalidOperation
                values[name] = Decimal(text)
            except InvalidOperation:
                problems.append(
                    Problem(shown, number, name, "bad_number", f"{name} GPCI {text!r} is not a number")
                )
        key = (state, locality.zfill(2))
        if key in seen:
            problems.append(
                Problem(
                    shown,
                    number,
                    "locality",
                    "duplicate_locality",
                    f"{state}-{key[1]} also on line {seen[key]}",
                )
            )
            continue
        seen[key] = number
        if len(values) == 3:
            name = cell("name").rstrip("*").strip()
            out.append(
                GpciRow(cell("mac"), state, key[1], name, values["work"], values["pe"], values["mp"], number)
            )
    if not out and not problems:
        problems.append(Problem(shown, start + 1, None, "not_gpci", "no locality rows after the headings"))
    return out, problems


def import_gpci(path: Path, year: int, *, rules_dir: Path | None = None) -> GpciImport:
    """Write CMS's GPCI file for ``year`` into the rules folder; ``GpciRefused`` on any problem."""
    rows, problems = read_cms_gpci(path, year)
    if problems:
        raise GpciRefused(problems)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    target = resolve_rules_dir(rules_dir) / GPCI_DIR / f"{year}.csv"
    buffer = io.StringIO()
    buffer.write(
        f"# CY {year} geographic practice cost indices by Medicare locality (work GPCI with its floor).\n"
    )
    buffer.write(
        f"# Imported by `caretally rules import-gpci` from {path.name} (sha256 {digest[:16]}), CMS's\n"
    )
    buffer.write(
        "# GPCI file (PFS relative value files / final rule Addendum E). Import again to replace it.\n"
    )
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FIELDS)
    for r in rows:
        writer.writerow([r.mac, r.state, r.locality, r.name, r.work, r.pe, r.mp])
    target.parent.mkdir(parents=True, exist_ok=True)
    replaced = target.exists()
    handle, staged = tempfile.mkstemp(prefix=".gpci-", suffix=".csv.part", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(buffer.getvalue())
        found = check_gpci_file(Path(staged))
        if found:
            raise GpciRefused(found)
        os.replace(staged, target)
    finally:
        if os.path.exists(staged):
            os.unlink(staged)
    return GpciImport(target, year, digest, rows, replaced)


def check_gpci_file(path: Path) -> list[Problem]:
    """A GPCI file in the shipped layout: every row a locality with three indices."""
    shown = str(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return [Problem(shown, None, None, "unreadable", f"cannot read the file: {exc}")]
    problems: list[Problem] = []
    numbered = [
        (n, line) for n, line in enumerate(lines, start=1) if line.strip() and not line.startswith("#")
    ]
    if not numbered:
        return [Problem(shown, None, None, "not_gpci", "the file has no rows")]
    header_line, header = numbered[0]
    if next(csv.reader([header])) != list(FIELDS):
        problems.append(
            Problem(shown, header_line, None, "not_gpci", f"the heading must be {','.join(FIELDS)}")
        )
        return problems
    for number, line in numbered[1:]:
        cells = next(csv.reader([line]))
        if len(cells) != len(FIELDS):
            problems.append(
                Problem(shown, number, None, "bad_row", f"expected {len(FIELDS)} cells, got {len(cells)}")
            )
            continue
        row = dict(zip(FIELDS, cells, strict=True))
        if not STATE.match(row["state"]) or not re.match(r"^\d{2}$", row["locality"]):
            problems.append(
                Problem(
                    shown, number, "locality", "bad_row", f"{row['state']}-{row['locality']} is not ST-NN"
                )
            )
        for name in ("work", "pe", "mp"):
            if not INDEX.match(row[name]):
                problems.append(
                    Problem(shown, number, name, "bad_number", f"{name} {row[name]!r} is not a number")
                )
    return problems


def check_gpci_folder(rules_dir: Path | None = None) -> list[Problem]:
    """Every imported GPCI file (``caretally rules check``): named ``<year>.csv``, well formed."""
    folder = resolve_rules_dir(rules_dir) / GPCI_DIR
    if not folder.is_dir():
        return []
    problems: list[Problem] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") and path.name.endswith(".part"):
            continue
        if not re.match(r"^\d{4}\.csv$", path.name):
            problems.append(
                Problem(str(path), None, None, "layout_mismatch", "GPCI files are named <year>.csv")
            )
            continue
        problems.extend(check_gpci_file(path))
    return problems
