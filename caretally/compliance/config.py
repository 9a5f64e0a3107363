"""The OIG measure thresholds as cited data, read strictly from ``oig_measures.yaml``.

Each threshold keeps its citation and doc, so a scan report can say where each number
comes from; an unknown or missing key is an error rather than a silent default.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
DEFAULT_FILE = HERE / "oig_measures.yaml"

MEASURE_IDS = ("A2", "B1", "B2", "B3", "B4", "B5", "C11")
#: Per measure: the threshold keys it must carry (value + doc).
THRESHOLDS: dict[str, tuple[str, ...]] = {
    "A2": (),
    "B1": ("rise_ratio", "min_new"),
    "B2": ("practice_share",),
    "B3": ("practice_share",),
    "B4": ("other_practices",),
    "B5": (),
    "C11": ("min_conditions",),
}
MEASURE_KEYS = {"title", "unit", "cite", "national", "national_share", "doc"}
CODE_GROUPS = ("setup", "device_supply", "treatment_management", "ccm")
OPTIONS = {
    "shared_patients_practice_share": Decimal,
    "multiple_devices_repeated": int,
    "prior_relationship_lookback": str,
}
LOOKBACKS = ("since_2021", "three_years")


class ConfigError(ValueError):
    """The measures file does not say what it must."""


@dataclass(frozen=True)
class Cited:
    value: Any
    doc: str
    cite: tuple[str, ...] = ()


@dataclass(frozen=True)
class Measure:
    id: str
    title: str
    unit: str
    cite: tuple[str, ...]
    national: str
    doc: str
    thresholds: dict[str, Cited]
    national_share: Decimal | None = None

    def value(self, name: str) -> Any:
        return self.thresholds[name].value


@dataclass(frozen=True)
class MeasureBook:
    sources: dict[str, str]
    codes: dict[str, Cited]
    measures: dict[str, Measure]
    options: dict[str, Cited]

    def code_set(self, group: str) -> frozenset[str]:
        return frozenset(self.codes[group].value)

    def option(self, name: str) -> Any:
        return self.options[name].value

    def with_options(self, **changes: Any) -> MeasureBook:
        """The book with some options set (a caller's override), each checked as in the file."""
        options = dict(self.options)
        for name, value in changes.items():
            if value is None:
                continue
            if name not in OPTIONS:
                raise ConfigError(f"unknown option {name!r}; one of: {', '.join(OPTIONS)}")
            options[name] = Cited(_option_value(name, value), options[name].doc, options[name].cite)
        return MeasureBook(self.sources, self.codes, self.measures, options)

    def citation(self, keys: tuple[str, ...]) -> str:
        return "; ".join(self.sources[k] for k in keys)


def _cites(node: Any, where: str, sources: dict[str, str]) -> tuple[str, ...]:
    keys = tuple(node) if isinstance(node, list) else (node,)
    for key in keys:
        if key not in sources:
            raise ConfigError(f"{where}: unknown source {key!r}")
    return keys


def _option_value(name: str, value: Any) -> Any:
    kind = OPTIONS[name]
    try:
        result = kind(str(value)) if kind is not str else str(value)
    except (ArithmeticError, ValueError):
        raise ConfigError(f"option {name}: {value!r} is not a {kind.__name__}") from None
    if name == "prior_relationship_lookback" and result not in LOOKBACKS:
        raise ConfigError(f"option {name}: {value!r} is not one of {', '.join(LOOKBACKS)}")
    if isinstance(result, Decimal) and not Decimal(0) <= result <= Decimal(1):
        raise ConfigError(f"option {name}: {value} is not a share between 0 and 1")
    if isinstance(result, int) and result < 1:
        raise ConfigError(f"option {name}: {value} must be at least 1")
    return result


def _threshold(value: Any) -> Any:
    if isinstance(value, str):
        return Decimal(value)
    return value


def parse(doc: dict[str, Any]) -> MeasureBook:
    if set(doc) != {"sources", "codes", "measures", "options"}:
        raise ConfigError("the file needs exactly: sources, codes, measures, options")
    sources = {str(k): str(v) for k, v in doc["sources"].items()}
    codes: dict[str, Cited] = {}
    if set(doc["codes"]) != set(CODE_GROUPS):
        raise ConfigError(f"codes needs exactly: {', '.join(CODE_GROUPS)}")
    for name, node in doc["codes"].items():
        codes[name] = Cited(
            tuple(str(c) for c in node["value"]), node["doc"], _cites(node["cite"], name, sources)
        )
    measures: dict[str, Measure] = {}
    if set(doc["measures"]) != set(MEASURE_IDS):
        raise ConfigError(f"measures needs exactly: {', '.join(MEASURE_IDS)}")
    for mid, node in doc["measures"].items():
        wanted = THRESHOLDS[mid]
        unknown = set(node) - MEASURE_KEYS - set(wanted)
        missing = (MEASURE_KEYS - {"national_share"} | set(wanted)) - set(node)
        if unknown or missing:
            raise ConfigError(f"measure {mid}: unknown {sorted(unknown)}, missing {sorted(missing)}")
        thresholds = {k: Cited(_threshold(node[k]["value"]), node[k]["doc"]) for k in wanted}
        share = node.get("national_share")
        measures[mid] = Measure(
            mid,
            node["title"],
            node["unit"],
            _cites(node["cite"], mid, sources),
            node["national"],
            node["doc"],
            thresholds,
            Decimal(share) if share is not None else None,
        )
    if set(doc["options"]) != set(OPTIONS):
        raise ConfigError(f"options needs exactly: {', '.join(OPTIONS)}")
    options = {
        name: Cited(_option_value(name, node["value"]), node["doc"], _cites(node["cite"], name, sources))
        for name, node in doc["options"].items()
    }
    return MeasureBook(sources, codes, measures, options)


@lru_cache(maxsize=4)
def load(path: Path = DEFAULT_FILE) -> MeasureBook:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path.name}: cannot be read: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path.name}: not a mapping")
    try:
        return parse(doc)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path.name}: malformed: {exc}") from None
