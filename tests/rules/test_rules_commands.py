"""``caretally rules show`` and ``rules diff``: a proposed year says so; differences are values.

``rules show --date 2027-01-15`` must show the proposed CY2027 year and its status;
``rules diff 2026 2027`` lists each changed value (old → new, with its citation), and
``rules diff`` of a year and an overlay lists the overlay's differences.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from caretally.cli import main
from caretally.cli.main import build_app

runner = CliRunner()


def run(*args: str) -> Any:
    result = runner.invoke(build_app(), list(args))
    assert result.exit_code == 0, result.output
    return result


def test_rules_show_names_a_proposed_year_and_its_status() -> None:
    text = run("rules", "show", "--date", "2027-01-15").output
    assert "medicare 2027" in text and "PROPOSED" in text and "CMS-1848-P" in text
    assert "initiating_visit_required=false" in text and "(derived)" in text
    body = json.loads(run("rules", "show", "--date", "2027-01-15", "--json").stdout)
    assert (body["year"], body["status"], body["provisional"]) == (2027, "proposed", True)
    assert body["layers"] == ["medicare/2026", "medicare/2027"]
    assert "91 FR 43842" in body["status_sources"]
    assert body["globals"]["conversion_factor"]["value"] == "32.8409"
    amount = body["codes"]["99454"]["params"]["amount"]
    assert (amount["value"], amount["layer"]) == ("51.23", "medicare/2027")
    assert amount["derivation"] == "derived: 1.56 total RVU × CF 32.8409"
    assert body["codes"]["99454"]["params"]["min_days"]["layer"] == "medicare/2026"
    final = json.loads(run("rules", "show", "--date", "2026-06-01", "--json").stdout)
    assert (final["status"], final["provisional"], final["status_citation"]) == ("final", False, None)
    assert "PROPOSED" not in run("rules", "show", "--date", "2026-06-01").output


def test_rules_diff_2026_2027_value_by_value() -> None:
    body = json.loads(run("rules", "diff", "2026", "2027", "--json").stdout)
    assert body["old"] == {"rule_year": "medicare/2026", "year": 2026, "status": "final"}
    assert body["new"] == {"rule_year": "medicare/2026+medicare/2027", "year": 2027, "status": "proposed"}
    changes = {(c["kind"], c["code"], c["name"]): c for c in body["changes"]}
    status = changes[("status", None, "status")]
    assert (status["old"], status["new"]) == ("final", "proposed")
    cf = changes[("global", None, "conversion_factor")]
    assert (cf["old"], cf["new"], cf["new_layer"]) == ("33.4009", "32.8409", "medicare/2027")
    assert "cms-2027-pfs-proposed" in cf["new_citation"] and cf["new_source"].startswith(
        "medicare/2027.yaml:"
    )
    for name in (
        "initiating_visit_required",
        "rtm_requires_established_patient",
        "staff_minutes_employed_only",
    ):
        option = changes[("option", None, name)]
        assert (option["old"], option["new"]) == (None, "false")
    amount = changes[("param", "99454", "amount")]
    assert amount["old"] == "52.11" and amount["new"].startswith("51.23 (derived")
    # Nothing else of a code changes: thresholds, caps and performers are 2026's.
    assert {c["name"] for c in body["changes"] if c["kind"] == "param"} == {"amount"}
    assert not [c for c in body["changes"] if c["kind"] in ("code_added", "code_removed", "modifier")]
    text = run("rules", "diff", "2026", "2027").output
    assert "conversion_factor" in text and "33.4009" in text and "32.8409" in text


def test_rules_diff_a_year_and_an_overlay() -> None:
    body = json.loads(run("rules", "diff", "2026", "example-commercial", "--json").stdout)
    kinds = {(c["kind"], c["code"], c["name"]): c for c in body["changes"]}
    assert kinds[("option", None, "setup_min_days")]["new"] == "16"
    assert kinds[("param", "99458", "max_units")]["new"] == "2"
    assert kinds[("param", "99458", "max_units")]["new_layer"] == "payers/example-commercial"
    assert ("code_removed", "98975", None) in kinds
    same = json.loads(
        run("rules", "diff", "example-commercial@2026", "example-commercial@2026", "--json").stdout
    )
    assert same["changes"] == []


def test_rules_diff_of_an_unknown_year_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main.run(["rules", "diff", "2026", "2031"])
    err = capsys.readouterr().err
    assert done.value.code == 1 and "Traceback" not in err
    assert err.splitlines()[0] == "caretally: medicare: no rule-year 2031 (have 2025, 2026, 2027)"
