"""Every billing scenario through both paths: the columnar pass and the engine agree.

Each scenario of tests/scenarios is imported (its records and billing history) into its
own organization of one SQLite file; its month's facts come from the real SQL facts
build, and every patient-month the columnar pass does not flag must get the engine's
status, units, date of service, payment and claim-line parts for every code. Steps
scenarios are judged on their first billed month, with the records given before it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from caretally.billing.evaluate import evaluate_month
from caretally.columnar.decide import decide_months
from caretally.dates import parse_month
from caretally.store import db
from tests.columnar.agreement import diff, outcomes_of
from tests.scenarios.harness import (
    _d,
    _import,
    _rulebooks,
    _store_history,
    build_records,
    load_cases,
)

SCENARIOS = Path(__file__).parent.parent / "scenarios"
FILES = sorted(p for p in SCENARIOS.rglob("*.yaml") if "overlays" not in p.parts)
TALLY: Counter[str] = Counter()


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('scenarios') / 'both.sqlite'}"


def _month_of(spec: dict) -> str | None:
    if "month" in spec:
        return str(spec["month"])
    for step in spec.get("steps") or []:
        if "bill" in step:
            return str(step["bill"])
    return None


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SCENARIOS)))
def test_scenarios_agree_on_both_paths(path: Path, url: str) -> None:
    for case in load_cases(path):
        if case.spec.get("skip"):
            continue
        month_text = _month_of(case.spec)
        if month_text is None:
            continue
        engine = db.open_database(url, org_id=case.org_id)
        try:
            records, people = build_records(case)
            _import(engine, case, records, case.name)
            _store_history(engine, case, people)
            _, payer_rules = _rulebooks(case, people)
            as_of = _d(case.spec["as_of"]) if "as_of" in case.spec else None
            month = parse_month(month_text)
            pairs = list(evaluate_month(engine, case.org_id, month, payer_rules, as_of=as_of, problems=[]))
        finally:
            engine.dispose()
        result = decide_months((f, payer_rules.for_payer(f.payer)) for f, _ in pairs)
        for facts, decisions in pairs:
            why = result.flagged.get(facts.patient_id)
            TALLY[why or "decided"] += 1
            if why is not None or not decisions:
                continue
            mine = result.decided[facts.patient_id]
            theirs = outcomes_of(facts, decisions, payer_rules.for_payer(facts.payer))
            assert mine == theirs, f"{path.name}: {case.name}\n{diff(mine, theirs)}"


def test_scenario_tally() -> None:
    """Runs after the files above: how many scenario patient-months each path decided."""
    if not TALLY:
        pytest.skip("run with the scenario agreement test")
    print(f"\nscenario patient-months: {dict(TALLY)}")
    assert TALLY["decided"] >= 20
