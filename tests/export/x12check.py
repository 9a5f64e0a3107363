"""Runs the real pyx12 validator over an interchange held in memory.

pyx12 reports through a 999 acknowledgement and a JSON error tree; a test wants one answer
(valid or not) and, when not, the error lines to show, so this collects both.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import pyx12.params
import pyx12.x12n_document


@dataclass(frozen=True)
class X12Result:
    valid: bool
    ack: str  # the 999 pyx12 generated
    errors: list[str]

    @property
    def accepted(self) -> bool:
        """Valid, no error anywhere, and the 999 accepts the transaction set (IK5*A, AK9*A)."""
        return self.valid and not self.errors and "IK5*A~" in self.ack and "AK9*A*" in self.ack


def _collect(node: Any, path: str, out: list[str]) -> None:
    if isinstance(node, dict):
        for err in node.get("errors", []) or []:
            out.append(f"{path}: {err}")
        for key, value in node.items():
            if key != "errors":
                _collect(value, f"{path}/{key}", out)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _collect(item, f"{path}[{i}]", out)


def validate_x12(text: str) -> X12Result:
    logger = logging.getLogger("pyx12")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)  # pyx12 logs each error too; the result carries them
    try:
        ack, errors_json = io.StringIO(), io.StringIO()
        valid = pyx12.x12n_document.x12n_document(
            param=pyx12.params.params(),
            src_file=io.StringIO(text),
            fd_997=ack,
            fd_html=None,
            fd_xmldoc=None,
            fd_json=errors_json,
        )
    finally:
        logger.setLevel(previous)
    errors: list[str] = []
    if errors_json.getvalue():
        _collect(json.loads(errors_json.getvalue()), "", errors)
    errors += [seg for seg in ack.getvalue().split("~") if seg.strip().startswith(("IK3", "IK4"))]
    return X12Result(valid=bool(valid), ack=ack.getvalue(), errors=errors)


def segments(text: str) -> list[list[str]]:
    """The interchange split into segments and elements (separators as caretally writes them)."""
    return [s.strip().split("*") for s in text.split("~") if s.strip()]
