"""CMS's PPRRVU file as the source of amounts: read in CMS's layout, written as a cited layer.

The fixture ``tests/fixtures/cms/PPRRVU26_APR_nonQPP.csv`` follows the layout of CMS's
file (preamble, headings split over three rows, one row per code and modifier, 31
columns); its RVU values are invented for tests. ``GPCI2026.csv`` beside it follows the
layout of CMS's GPCI file (Addendum E).
"""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caretally.billing.gpci import GpciRefused, check_gpci_folder, import_gpci
from caretally.billing.pricing import load_gpci
from caretally.cli.main import build_app
from caretally.rules.loader import check_rulesets, load_rulebook
from caretally.rules.rvu_import import ImportRefused, changed, import_rvu, read_pprrvu

FIXTURES = Path(__file__).parents[1] / "fixtures" / "cms"
PPRRVU = FIXTURES / "PPRRVU26_APR_nonQPP.csv"
GPCI = FIXTURES / "GPCI2026.csv"
CF_2027 = Decimal("32.8409")


def _cents(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"))


def test_the_file_is_read_by_its_headings_in_cms_layout() -> None:
    rvu, problems = read_pprrvu(PPRRVU)
    assert not problems and rvu is not None
    assert rvu.columns == {
        "hcpcs": 0, "modifier": 1, "description": 2, "status": 3, "work": 5, "pe_nonfacility": 6,
        "mp": 10, "total": 11, "conversion_factor": 24,
    }  # fmt: skip
    assert (rvu.data_rows, rvu.modifier_rows) == (31, 1)  # 93000-26 is not the global row
    row = rvu.rows["99454"]
    assert (row.status, row.cells["work"], row.cells["pe_nonfacility"], row.cells["total"]) == (
        "A", "0.00", "1.55", "1.56"
    )  # fmt: skip
    assert rvu.rows["98985"].status == "C"


def test_one_heading_row_reads_the_same(tmp_path: Path) -> None:
    """Some years put each heading in one row (``WORK RVU``): found by name all the same."""
    lines = PPRRVU.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("HCPCS,"))
    stacked = [lines[at - 2].split(","), lines[at - 1].split(","), lines[at].split(",")]
    joined = [" ".join(p for p in col if p) for col in zip(*stacked, strict=True)]
    one = tmp_path / "PPRRVU26_single.csv"
    one.write_text("\n".join([*lines[: at - 2], ",".join(joined), *lines[at + 1 :]]) + "\n")
    a, _ = read_pprrvu(PPRRVU)
    b, problems = read_pprrvu(one)
    assert not problems and a is not None and b is not None
    assert {c: r.cells for c, r in a.rows.items()} == {c: r.cells for c, r in b.rows.items()}


def test_import_writes_a_cited_layer_that_replaces_the_estimates(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    before = load_rulebook(rules_dir=folder).for_year(2026)
    done = import_rvu(PPRRVU, 2026, "b", rules_dir=folder)
    assert done.path == folder / "medicare" / "2026" / "pprrvu.yaml"
    assert (done.title, done.layer, done.replaced, done.extended_by) == (
        "CMS PPRRVU26 release B", "cms/pprrvu26-b", None, (2027,)
    )  # fmt: skip
    book = load_rulebook(rules_dir=folder)
    y26, y27 = book.for_year(2026), book.for_year(2027)
    assert y26.layers == ("medicare/2026", "cms/pprrvu26-b")
    assert y27.layers == ("medicare/2026", "cms/pprrvu26-b", "medicare/2027")
    amount = y26.code("99457").param("amount")
    assert (amount.value, amount.layer, amount.citation) == (
        Decimal("51.10"),
        "cms/pprrvu26-b",
        "cms-pprrvu26-b",
    )
    assert amount.source.startswith("medicare/2026/pprrvu.yaml:")
    assert (
        "PPRRVU26 release B" in y26.sources["cms-pprrvu26-b"] and PPRRVU.name in y26.sources["cms-pprrvu26-b"]
    )
    parts = {"work": "0.61", "pe_nonfacility": "0.88", "mp": "0.04", "total": "1.53"}
    assert dict(y26.code("99457").value("rvu")) == {k: Decimal(v) for k, v in parts.items()}
    # Status C: carrier-priced, explicitly unpriced (it had a $36.00 estimate).
    assert before.code("98985").amount == Decimal("36.00")
    assert y26.code("98985").amount is None and y26.code("98985").value("rvu") is None
    assert y26.code("98985").param("amount").layer == "cms/pprrvu26-b"
    # Unpriced in the estimates, priced by the file.
    assert before.code("99491").amount is None and y26.code("99491").amount == Decimal("85.84")
    # Only what the file gives changes; thresholds stay the shipped year's.
    assert y26.code("99457").param("min_minutes").layer == "medicare/2026"
    # 2027 derives from the imported RVUs.
    assert y27.code("99457").amount == _cents(Decimal("1.53") * CF_2027)
    assert y27.code("98985").amount is None
    moved = {c.code: (c.before, c.after) for c in changed(done.codes)}
    assert moved["98985"] == (Decimal("36.00"), None) and moved["99457"] == (
        Decimal("51.77"),
        Decimal("51.10"),
    )
    assert "99454" not in moved  # same figure as the March 2026 correction
    assert check_rulesets(rules_dir=folder) == []


def test_a_newer_release_replaces_the_layer_and_codes_missing_from_the_file_keep_their_value(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "rules"
    first = import_rvu(PPRRVU, 2026, "B", rules_dir=folder)
    absent_before = {c.code for c in first.codes if not c.in_file}  # codes the sample file lacks
    partial = tmp_path / "PPRRVU26_JUL_nonQPP.csv"
    partial.write_text(
        "".join(ln for ln in PPRRVU.read_text().splitlines(True) if not ln.startswith("99439,"))
    )
    done = import_rvu(partial, 2026, "C", rules_dir=folder)
    assert done.replaced == "CMS PPRRVU26 release B" and done.layer == "cms/pprrvu26-c"
    assert {c.code for c in done.codes if not c.in_file} - absent_before == {"99439"}
    y26 = load_rulebook(rules_dir=folder).for_year(2026)
    assert y26.layers == ("medicare/2026", "cms/pprrvu26-c")
    assert y26.code("99439").param("amount").layer == "medicare/2026"  # the estimate, kept
    assert y26.code("99457").param("amount").layer == "cms/pprrvu26-c"
    assert len(list((folder / "medicare" / "2026").glob("*.yaml"))) == 1


def _refusal(tmp_path: Path, source: Path, year: int = 2026, release: str = "B") -> list[str]:
    folder = tmp_path / "rules"
    with pytest.raises(ImportRefused) as err:
        import_rvu(source, year, release, rules_dir=folder)
    assert not (folder / "medicare" / str(year) / "pprrvu.yaml").exists(), "nothing is written"
    return [p.code for p in err.value.problems]


def test_the_import_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    assert _refusal(tmp_path, GPCI) == ["not_pprrvu"]
    assert _refusal(tmp_path, PPRRVU, year=2025) == ["conversion_factor_mismatch"]  # 2025's CF is 32.3465
    assert _refusal(tmp_path, PPRRVU, year=2031) == ["unknown_rule_year"]
    assert _refusal(tmp_path, PPRRVU, release="second") == ["bad_release"]
    broken = tmp_path / "PPRRVU26_broken.csv"
    broken.write_text(
        PPRRVU.read_text().replace("99457,,Rem physiol mntr 1st 20 min,A,,0.61", "99457,,x,A,,zero")
    )
    with pytest.raises(ImportRefused) as err:
        import_rvu(broken, 2026, "B", rules_dir=tmp_path / "rules")
    (problem,) = err.value.problems
    assert (problem.code, problem.field) == ("bad_number", "work") and problem.line is not None


def test_rules_check_validates_an_imported_layer(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    done = import_rvu(PPRRVU, 2026, "B", rules_dir=folder)
    text = done.path.read_text()
    at = text.index('  "99457":\n    params:\n') + len('  "99457":\n    params:\n')
    done.path.write_text(text[:at] + "      min_minutes: {value: 10, cite: cms-pprrvu26-b}\n" + text[at:])
    line = text[:at].count("\n") + 1
    result = CliRunner().invoke(build_app(), ["rules", "check", "--rules-dir", str(folder), "--json"])
    assert result.exit_code == 1
    found = [(p["code"], p["line"], p["field"]) for p in json.loads(result.stdout)]
    assert found == [("unknown_key", line, "codes.99457.params.min_minutes")]


def test_import_rvu_command(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    args = [
        "rules",
        "import-rvu",
        str(PPRRVU),
        "--year",
        "2026",
        "--release",
        "B",
        "--rules-dir",
        str(folder),
    ]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert (
        "CMS PPRRVU26 release B" in result.output and "98985" in result.output and "unpriced" in result.output
    )
    as_json = CliRunner().invoke(build_app(), [*args, "--json"])
    body = json.loads(as_json.stdout)
    assert body["replaced"] == "CMS PPRRVU26 release B" and body["layer"] == "cms/pprrvu26-b"
    assert {c["code"]: c["amount_after"] for c in body["codes"]}["98985"] is None
    refused = CliRunner().invoke(build_app(), [*args[:4], "2025", *args[5:], "--json"])
    assert (
        refused.exit_code == 1
        and json.loads(refused.stdout)["problems"][0]["code"] == "conversion_factor_mismatch"
    )


# --------------------------------------------------------------------------------------
# GPCI
# --------------------------------------------------------------------------------------


def test_gpci_import_feeds_locality_pricing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "rules"
    monkeypatch.setenv("CARETALLY_RULES_DIR", str(folder))
    with pytest.raises(Exception) as missing:
        load_gpci(2026, "CO-01")
    assert "import-gpci" in str(missing.value)
    done = import_gpci(GPCI, 2026)
    assert done.path == folder / "gpci" / "2026.csv" and len(done.rows) == 6
    co = load_gpci(2026, "CO-01")
    assert (co.work, co.pe, co.mp) == (Decimal("1.011"), Decimal("1.062"), Decimal("0.835"))
    assert "(imported)" in co.source
    ak = load_gpci(2026, "AK-01")
    assert ak.work == Decimal("1.500") and ak.name == "ALASKA"  # the with-floor column, footnote mark dropped
    assert load_gpci(2025, "CO-01").work == Decimal("1.008")  # shipped 2025 unchanged
    assert check_gpci_folder() == []


def test_gpci_import_refusals_and_check(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    with pytest.raises(GpciRefused) as wrong_year:
        import_gpci(GPCI, 2027, rules_dir=folder)
    assert [p.code for p in wrong_year.value.problems] == ["gpci_year_mismatch"]
    with pytest.raises(GpciRefused) as not_gpci:
        import_gpci(PPRRVU, 2026, rules_dir=folder)
    assert [p.code for p in not_gpci.value.problems] == ["not_gpci"]
    done = import_gpci(GPCI, 2026, rules_dir=folder)
    done.path.write_text(done.path.read_text().replace("1.062", "one"))
    problems = check_gpci_folder(folder)
    assert [(p.code, p.field) for p in problems] == [("bad_number", "pe")]
    shutil.copy(done.path, folder / "gpci" / "latest.csv")
    assert "layout_mismatch" in {p.code for p in check_gpci_folder(folder)}
    result = CliRunner().invoke(build_app(), ["rules", "check", "--rules-dir", str(folder)])
    assert result.exit_code == 1 and "bad_number" not in result.output and "is not a number" in result.output
