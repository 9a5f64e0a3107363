"""YAML to a node tree with line numbers, refusing what PyYAML would silently accept.

The rule loader works on ``yaml.compose`` nodes rather than constructed Python objects
because nodes keep their line and their raw text: a reviewer needs ``file:line`` for
every problem, a duplicate key must be *seen* (PyYAML keeps the last one without a
word), and "is this a quoted string or a float literal?" can only be answered from the
node's tag. Nothing here knows about rule-years; :mod:`caretally.rules.loader_schema`
gives the nodes meaning.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import yaml

from caretally.errors import Problem

TAG_STR = "tag:yaml.org,2002:str"
TAG_INT = "tag:yaml.org,2002:int"
TAG_FLOAT = "tag:yaml.org,2002:float"
TAG_BOOL = "tag:yaml.org,2002:bool"
TAG_NULL = "tag:yaml.org,2002:null"
TAG_TIMESTAMP = "tag:yaml.org,2002:timestamp"


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def kind_of(node: yaml.Node) -> str:
    """A reviewer's word for what was written: used in "expected X, got Y" messages."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return {
        TAG_STR: "text",
        TAG_INT: "an integer",
        TAG_FLOAT: "a float literal",
        TAG_BOOL: "true/false",
        TAG_NULL: "null",
        TAG_TIMESTAMP: "a date",
    }.get(node.tag, f"a value tagged {node.tag}")


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == TAG_NULL


@dataclass(frozen=True, slots=True)
class Entry:
    """One key of a mapping: its name, the key node (for the line) and the value node."""

    name: str
    key: yaml.Node
    value: yaml.Node

    @property
    def line(self) -> int:
        return line_of(self.key)


def parse(text: str, file: str) -> tuple[yaml.Node | None, list[Problem]]:
    """Compose one YAML document; a syntax error is a problem, not an exception."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p) or str(exc)
        return None, [Problem(file, line, None, "yaml_syntax", f"not valid YAML: {message}")]
    except yaml.YAMLError as exc:
        return None, [Problem(file, None, None, "yaml_syntax", f"not valid YAML: {exc}")]
    if node is None:
        return None, [Problem(file, 1, None, "empty_file", "the file holds no YAML document")]
    return node, []


def entries(node: yaml.MappingNode, file: str, where: str, problems: list[Problem]) -> Iterator[Entry]:
    """The keys of a mapping in file order; duplicates and non-text keys become problems.

    A duplicated key is reported at its second occurrence and skipped, so the first
    value is the one validated and the file still yields every other problem.
    """
    seen: dict[str, int] = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag not in (TAG_STR, TAG_INT):
            problems.append(
                Problem(
                    file, line_of(key), where or None, "wrong_type", f"a key must be text, got {kind_of(key)}"
                )
            )
            continue
        name = key.value
        if key.tag == TAG_INT:
            problems.append(
                Problem(
                    file,
                    line_of(key),
                    _join(where, name),
                    "wrong_type",
                    f'key {name} is read as a number; quote it ("{name}")',
                )
            )
        if name in seen:
            problems.append(
                Problem(
                    file,
                    line_of(key),
                    _join(where, name),
                    "duplicate_key",
                    f"key '{name}' appears twice (first on line {seen[name]}); YAML would keep only the last",
                )
            )
            continue
        seen[name] = line_of(key)
        yield Entry(name, key, value)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
