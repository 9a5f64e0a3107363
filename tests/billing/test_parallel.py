"""Forked workers give exactly the answers one process gives (month run and worklist).

Workers encode each patient's stored decisions themselves, so the stored decisions are
compared too, not only the claim lines.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import pytest

import caretally.billing.evaluate as evaluate
from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month, line_content, stored_decisions
from caretally.dates import parse_month
from caretally.ingest import import_bundle
from caretally.store.db import open_database
from caretally.synth import SynthConfig, synthesize
from caretally.worklist import build_worklist


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parallel")
    synthesize(SynthConfig(patients=90, start=date(2026, 3, 1), months=1, seed=23, lead_in_days=29), out)
    return out


def test_workers_match_one_process(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = PayerRules.load()
    month = parse_month("2026-03")
    answers = []
    for name, threshold in (("serial", 10**9), ("workers", 1)):
        monkeypatch.setattr(evaluate, "PARALLEL_FROM", threshold)
        monkeypatch.setattr(evaluate, "BATCH", 13)  # several ranges, uneven last one
        engine = open_database(f"sqlite:///{tmp_path / name}.db")
        assert import_bundle(engine, "default", bundle).ok()
        worklist = [row.to_json() for row in build_worklist(engine, "default", date(2026, 3, 20), rules)]
        run = bill_month(engine, "default", month, rules)
        lines = [line_content(line) for line in run.lines]
        answers.append((lines, run.summary.expected_revenue, worklist, stored_decisions(engine, run.run_id)))
        engine.dispose()
    assert answers[0][0] and answers[0][2], "the practice bills something and has open periods"
    assert len(answers[0][3]) > 90, "every patient's decisions are stored"
    assert answers[0] == answers[1]


def _pid(_: int) -> int:
    import time

    time.sleep(0.2)  # long enough that both workers take a share
    return os.getpid()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.split()[1:2] == ["Z"] for line in status if line.startswith("State:"))
    except FileNotFoundError:
        return True


def _forks_and_leaves(send: Any) -> None:
    """Start a pool as ``map_month`` does, then end without shutting it down."""
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=2, mp_context=context, initializer=evaluate._leave_with_parent)
    send.send(sorted(set(pool.map(_pid, range(6)))))
    os._exit(0)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc to see processes end")
def test_forked_workers_end_when_the_process_that_forked_them_is_gone() -> None:
    """A server killed mid-run left its month-run workers waiting for ever (seen under
    ``caretally serve``); they now notice their parent is gone and end."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    parent = context.Process(target=_forks_and_leaves, args=(send,))
    parent.start()
    workers = receive.recv()
    parent.join(30)
    assert workers and parent.exitcode == 0
    deadline = time.monotonic() + 15
    while not all(_gone(pid) for pid in workers):
        assert time.monotonic() < deadline, f"forked workers still running: {workers}"
        time.sleep(0.2)
