"""Same seed → the same bytes; another seed → another practice; counts match the files."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from caretally.synth import SynthConfig, synthesize
from caretally.synth.config import window_for
from tests.synth.bundle import STEMS, Bundle, file_bytes, instant, read_bundle


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_same_seed_gives_byte_identical_bundles(tmp_path: Path, fmt: str) -> None:
    config = SynthConfig(patients=80, start=date(2026, 3, 1), months=2, seed=42, fmt=fmt)
    first = synthesize(config, tmp_path / "a")
    second = synthesize(config, tmp_path / "b")
    assert first == second
    a, b = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b")
    assert sorted(a) == sorted(f"{stem}.{fmt}" for stem in STEMS)
    assert a == b


def test_different_seed_gives_a_different_practice(tmp_path: Path) -> None:
    synthesize(SynthConfig(patients=80, start=date(2026, 3, 1), months=1, seed=1), tmp_path / "a")
    synthesize(SynthConfig(patients=80, start=date(2026, 3, 1), months=1, seed=2), tmp_path / "b")
    a, b = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b")
    for name in a:
        assert a[name] != b[name], name


def test_a_patient_does_not_depend_on_how_many_others_are_generated(tmp_path: Path) -> None:
    """Each patient has its own random stream, so a bigger panel only appends patients."""
    synthesize(SynthConfig(patients=20, start=date(2026, 3, 1), months=1, seed=9), tmp_path / "small")
    synthesize(SynthConfig(patients=40, start=date(2026, 3, 1), months=1, seed=9), tmp_path / "big")
    small, big = read_bundle(tmp_path / "small"), read_bundle(tmp_path / "big")
    for stem in ("patients", "enrollments", "devices", "readings", "time_entries"):
        in_small = [r for r in big.rows[stem] if int(r["patient_id"][1:]) <= 20]
        assert in_small == small.rows[stem], stem


def test_returned_counts_match_the_rows_written(tmp_path: Path) -> None:
    counts = synthesize(SynthConfig(patients=30, start=date(2026, 3, 1), months=1, seed=5), tmp_path)
    bundle = read_bundle(tmp_path)
    assert counts == {stem: len(bundle.rows[stem]) for stem in STEMS}
    assert counts["patients"] == 30
    assert counts["readings"] > 0 and counts["time_entries"] > 0


def test_jsonl_holds_the_same_records_with_native_types(tmp_path: Path) -> None:
    config = SynthConfig(patients=40, start=date(2026, 3, 1), months=1, seed=11)
    synthesize(config, tmp_path / "csv")
    synthesize(replace(config, fmt="jsonl"), tmp_path / "j")
    as_csv = read_bundle(tmp_path / "csv")
    for stem in STEMS:
        lines = (tmp_path / "j" / f"{stem}.jsonl").read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]
        assert len(records) == len(as_csv.rows[stem])
        for record, row in zip(records, as_csv.rows[stem], strict=True):
            for column, text in row.items():
                value = record.get(column)
                if text == "":
                    assert column not in record
                elif isinstance(value, bool):
                    assert text == ("true" if value else "false")
                elif isinstance(value, int):
                    assert column == "seconds" and text == str(value)
                else:
                    assert value == text


def test_a_start_inside_a_month_covers_k_months_from_that_day(tmp_path: Path) -> None:
    synthesize(SynthConfig(patients=60, start=date(2026, 1, 15), months=2, seed=3), tmp_path)
    bundle = read_bundle(tmp_path)
    window = window_for(date(2026, 1, 15), 2)
    assert (window.first, window.last) == (date(2026, 1, 15), date(2026, 3, 14))
    stamps = [instant(r["measured_at"]) for r in bundle.rows["readings"]]
    # A local date is at most a day away from the UTC date in US zones.
    assert min(s.date() for s in stamps) >= date(2026, 1, 15)
    assert max(s.date() for s in stamps) <= date(2026, 3, 15)
    starts = [instant(r["started_at"]) for r in bundle.rows["time_entries"]]
    assert {s.strftime("%Y%m") for s in starts} == {"202601", "202602", "202603"}
    assert all(date(2026, 1, 15) <= s.date() <= date(2026, 3, 14) for s in starts)


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        SynthConfig(patients=1, start=date(2026, 3, 1), months=0, seed=1)
    with pytest.raises(ValueError):
        SynthConfig(patients=1, start=date(2026, 3, 1), months=1, seed=1, fmt="xml")


def test_switching_format_in_the_same_folder_leaves_one_copy_per_file(tmp_path: Path) -> None:
    config = SynthConfig(patients=5, start=date(2026, 3, 1), months=1, seed=1)
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    synthesize(config, tmp_path)
    synthesize(replace(config, fmt="jsonl"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(f"{s}.jsonl" for s in STEMS), "notes.txt"])


def test_lead_in_adds_readings_before_start_and_nothing_else(tmp_path: Path) -> None:
    base = SynthConfig(patients=60, start=date(2026, 3, 1), months=1, seed=8)
    synthesize(base, tmp_path / "plain")
    synthesize(replace(base, lead_in_days=29), tmp_path / "lead")
    plain, lead = read_bundle(tmp_path / "plain"), read_bundle(tmp_path / "lead")
    zones = {p["patient_id"]: ZoneInfo(p["timezone"]) for p in lead.rows["patients"]}

    def local_days(bundle: Bundle) -> list[date]:
        return [
            instant(r["measured_at"]).astimezone(zones[r["patient_id"]]).date()
            for r in bundle.rows["readings"]
        ]

    assert min(local_days(plain)) >= date(2026, 3, 1)
    early = [d for d in local_days(lead) if d < date(2026, 3, 1)]
    assert early and min(early) >= date(2026, 1, 31)
    assert len(lead.rows["readings"]) > len(plain.rows["readings"])
    for stem in ("practitioners", "patients", "enrollments", "devices"):
        assert lead.rows[stem] == plain.rows[stem], stem
    starts = [instant(r["started_at"]).astimezone(zones[r["patient_id"]]) for r in lead.rows["time_entries"]]
    assert min(starts).date() >= date(2026, 3, 1)
    with pytest.raises(ValueError):
        replace(base, lead_in_days=-1)
