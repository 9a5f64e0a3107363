"""The columnar month run's facts snapshot: the generic walk against the compiled encoder.

    python bench/columnar_parts.py sqlite:////path/to/bench.sqlite [--months 4000] [--rounds 3]

Builds the first ``--months`` patient-months of March 2026 (organization ``bench``, as
``bench/run.py`` imports it) once, then encodes them as a columnar month run stores them
(``orjson.dumps``), with ``encode_any`` (the walk every run used before) and with
``encode`` (one function per model dataclass), alternating ``--rounds`` times. The bytes
must be equal (asserted); the ratios are what to read on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from caretally.billing.evaluate import _facts_by_payer_options  # noqa: E402
from caretally.billing.payers import PayerRules  # noqa: E402
from caretally.columnar.snapshot import encode, encode_any  # noqa: E402
from caretally.dates import parse_month  # noqa: E402
from caretally.store.db import open_database  # noqa: E402


def _timed(label: str, fn: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - began
    print(f"{label}: {seconds:.3f} s", flush=True)
    return seconds, out


def _pair(name: str, before: Callable[[], Any], after: Callable[[], Any]) -> None:
    a, x = _timed(f"{name} (before)", before)
    b, y = _timed(f"{name} (after)", after)
    assert x == y, name
    print(f"  {name}: after ÷ before {b / a:.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="an imported bench database")
    parser.add_argument("--months", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    engine = open_database(args.url, "bench")
    rules = PayerRules.load()
    month = parse_month("2026-03")
    facts = list(
        islice(_facts_by_payer_options(engine, "bench", month, rules, None, None, None, {}), args.months)
    )
    engine.dispose()
    print(f"{len(facts):,} patient-months", flush=True)
    for _ in range(args.rounds):
        _pair(
            "snapshot encoding",
            lambda: [orjson.dumps(encode_any(f)) for f in facts],
            lambda: [orjson.dumps(encode(f)) for f in facts],
        )


if __name__ == "__main__":
    main()
