"""A patient-month's facts as JSON and back, so its reasons can be made again later.

A month the columnar pass decided is stored without reasons; readers ask the engine for
them on demand. The engine must then see the facts the run saw, not today's data (an
import may have changed it since), so the run stores this snapshot of the
``PatientMonthFacts`` beside the typed decisions. Encoding follows the dataclasses'
type hints, so decoding gives back equal objects — the stored facts digest
(``sha256(repr(facts))``) proves it on every read.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import date, datetime
from enum import Enum
from functools import cache
from typing import Any

from caretally import model
from caretally.model import PatientMonthFacts


def encode(value: Any) -> Any:
    """JSON-ready form of facts: dataclasses as lists of their fields in order.

    Called for every value of every decided month (a quarter of a columnar month run's
    time went to ``dataclasses.is_dataclass`` and ``fields`` before the field names were
    remembered per class), so plain values return first.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    names = _names(kind)
    if names is not None:
        return [encode(getattr(value, n)) for n in names]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return [[encode(k), encode(v)] for k, v in value.items()]
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    return value


@cache
def _names(kind: type) -> tuple[str, ...] | None:
    """A dataclass's field names in order (None for any other type)."""
    if dataclasses.is_dataclass(kind):
        return tuple(f.name for f in dataclasses.fields(kind))
    return None


def decode_facts(data: Any) -> PatientMonthFacts:
    return _decode(PatientMonthFacts, data)


@cache
def _hints(cls: type) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls, vars(model))
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


def _decode(tp: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(inner[0], data)
    if origin is tuple:
        args = typing.get_args(tp)
        item = args[0]
        return tuple(_decode(item, v) for v in data)
    if origin is dict:
        key, val = typing.get_args(tp)
        return {_decode(key, k): _decode(val, v) for k, v in data}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp(**{name: _decode(hint, v) for (name, hint), v in zip(_hints(tp), data, strict=True)})
    if tp is datetime:
        return datetime.fromisoformat(data)
    if tp is date:
        return date.fromisoformat(data)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(data)
    return data
