"""The columnar pass knows every rule id the engine's families can write.

Reads the source of ``caretally/rules/families`` (and ``allocation.py``) and lists every
string that is spelled like a rule id (``word.word``, with ``{}`` where an f-string fills in a program or
prefix). Each must have a row in ``columnar.rule_ids.KNOWN`` saying whether the pass
computes it, it is advisory, or the months where it can block are flagged — so a new
check in a family fails here until someone decides how the columnar pass treats it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from caretally.columnar.rule_ids import DECIDED, KNOWN, decided_pattern
from caretally.rules import families

RULE_ID = re.compile(r"^(\{\}|[a-z_]+)(\.(\{\}|[a-z_]+))+$")


def _pattern(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def engine_rule_ids() -> dict[str, set[str]]:
    """Rule-id patterns in the families' source, with the modules that spell them."""
    found: dict[str, set[str]] = {}
    rules_dir = Path(families.__file__).parent.parent
    for path in [*sorted((rules_dir / "families").glob("*.py")), rules_dir / "allocation.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            p = _pattern(node)
            if p is not None and RULE_ID.match(p):
                found.setdefault(p, set()).add(path.stem)
    return found


def test_every_engine_rule_id_is_known_to_the_columnar_pass() -> None:
    found = engine_rule_ids()
    assert len(found) > 40, "the source scan found too few rule ids to mean anything"
    unknown = {p: sorted(m) for p, m in found.items() if p not in KNOWN}
    assert not unknown, (
        "rule ids the engine can write that caretally/columnar/rule_ids.py does not list "
        f"(decide them in the pass, or flag the months they can block): {unknown}"
    )
    stale = sorted(set(KNOWN) - set(found))
    assert not stale, f"columnar/rule_ids.py lists rule ids no family writes any more: {stale}"


def test_decided_patterns_match_the_concrete_ids() -> None:
    assert decided_pattern("rpm.tm.max_minutes") == "{}.min_minutes"
    assert decided_pattern("ccm.lane") == "{}.lane"
    assert decided_pattern("concurrency.exclusive_with") == "concurrency.exclusive_with"
    assert decided_pattern("concurrency.one_practitioner") is None
    assert decided_pattern("apcm.level") is None
    assert all(how == DECIDED or ":" in how or how == "advisory" for how in KNOWN.values())
