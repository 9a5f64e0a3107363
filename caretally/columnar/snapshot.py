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
from collections.abc import Callable
from datetime import date, datetime
from enum import Enum
from functools import cache
from typing import Any

from caretally import model
from caretally.model import PatientMonthFacts


def encode(value: Any) -> Any:
    """JSON-ready form of facts: dataclasses as lists of their fields in order.

    Called for every decided month of a columnar month run (at 20,000 patients the generic
    walk, :func:`encode_any`, took 10.6 s of a profiled 119 s run: 2.8 million calls that
    each asked the value's type), so a dataclass is encoded by a function compiled once
    from its type hints (:func:`_compiled`) that gives the same lists; other values walk.
    """
    compiled = _compiled(type(value))
    if compiled is not None:
        return compiled(value)
    return encode_any(value)


def encode_any(value: Any) -> Any:
    """The generic walk :func:`encode` must equal: each value's own type decides its form."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    names = _names(kind)
    if names is not None:
        return [encode_any(getattr(value, n)) for n in names]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return [[encode_any(k), encode_any(v)] for k, v in value.items()]
    if isinstance(value, tuple | list):
        return [encode_any(v) for v in value]
    return value


@cache
def _names(kind: type) -> tuple[str, ...] | None:
    """A dataclass's field names in order (None for any other type)."""
    if dataclasses.is_dataclass(kind):
        return tuple(f.name for f in dataclasses.fields(kind))
    return None


#: Hinted types a value of which is its own JSON form (a ``str`` field holding a StrEnum
#: member is written by orjson as the same string ``encode_any`` gives).
_PLAIN: frozenset[Any] = frozenset({str, int, bool, float})


@cache
def _compiled(kind: type) -> Callable[[Any], Any] | None:
    """For a model dataclass, one generated function that builds its encoded list.

    Each field's expression follows its type hint — dates ``isoformat()``, enums
    ``.value``, tuples and dicts as lists, nested dataclasses through their own compiled
    function, ``None`` kept — and any hint it does not know falls back to
    :func:`encode_any` for that field, so the output is the walk's, value for value
    (tests/columnar/test_snapshot.py proves it on generated patient-months).
    """
    if not dataclasses.is_dataclass(kind) or kind.__module__ != model.__name__:
        return None
    scope: dict[str, Any] = {"_any": encode_any}
    parts = [_expr(hint, f"v.{name}", scope, 0) for name, hint in _hints(kind)]
    source = f"def _encode(v):\n    return [{', '.join(parts)}]\n"
    exec(compile(source, f"<snapshot encoder of {kind.__name__}>", "exec"), scope)
    encoder: Callable[[Any], Any] = scope["_encode"]
    return encoder


def _expr(hint: Any, src: str, scope: dict[str, Any], depth: int) -> str:
    """A Python expression encoding ``src`` (a value of type ``hint``) as ``encode_any`` would."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) != 1:
            return f"_any({src})"
        return _expr(inner[0], src, scope, depth)  # every form below keeps None as None
    if hint in _PLAIN:
        return src
    guard = f"(None if {src} is None else {{}})"
    if hint is date or hint is datetime:
        return guard.format(f"{src}.isoformat()")
    if isinstance(hint, type) and issubclass(hint, Enum):
        return f"getattr({src}, 'value', {src})"  # None and a plain string stay as they are
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            x = f"_x{depth}"
            return guard.format(f"[{_expr(args[0], x, scope, depth + 1)} for {x} in {src}]")
        return f"_any({src})"
    if origin is dict:
        key, val = typing.get_args(hint)
        k, x = f"_k{depth}", f"_x{depth}"
        pair = f"[{_expr(key, k, scope, depth + 1)}, {_expr(val, x, scope, depth + 1)}]"
        return guard.format(f"[{pair} for {k}, {x} in {src}.items()]")
    if isinstance(hint, type) and _compiled(hint) is not None:
        name = f"_enc_{hint.__name__}"
        scope[name] = _compiled(hint)
        return guard.format(f"{name}({src})")
    return f"_any({src})"


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
