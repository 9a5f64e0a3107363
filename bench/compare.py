"""Two versions of caretally billing the same month of the same bundle, back to back.

    python bench/compare.py --before /work/wt-before --after . --patients 10000 --pairs 3

Each version is a source tree (a frozen ``git worktree`` of the old commit, and the tree
under test); every step of a version runs in a fresh interpreter with ``PYTHONPATH``
pointed at that tree, so the installed package never leaks in. The bundle is synthesized
once (``SynthConfig(patients=N, start=2026-03-01, months=1, seed=1)``, as ``bench/run.py``
does) and imported once per version, each with its own code (the schemas differ). Then
the month run is timed in pairs — before, after, before, after … — each on a fresh copy
of that version's imported database, so no run finds an earlier run of the month.

Why pairs and CPU seconds: the machine is shared, so a neighbour's burst lands on
whichever run is in flight. Interleaving spreads that over both versions, the per-pair
ratio cancels slow phases of the machine, and the median ratio drops the worst pair.
CPU seconds (user + sys of the run's process and of the forked workers it waited for)
are reported beside wall time because they are less disturbed by neighbours.

The measured interval is ``bill_month`` alone: interpreter start, imports, opening and
migrating the database and loading the rule pack happen before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ORG = "bench"
MONTH = "2026-03"
MARK = "COMPARE-RESULT "


# ----------------------------------------------------------------------------------------
# Children: ``python bench/compare.py --child STEP ARGS…`` with PYTHONPATH set to one version.
# ----------------------------------------------------------------------------------------


def _cpu() -> float:
    """User + sys seconds of this process and of every child it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _child_synth(patients: str, out: str) -> dict[str, Any]:
    from caretally.synth import SynthConfig, synthesize

    counts = synthesize(
        SynthConfig(patients=int(patients), start=date(2026, 3, 1), months=1, seed=1), Path(out)
    )
    return {"counts": counts}


def _child_import(url: str, bundle: str) -> dict[str, Any]:
    from caretally.ingest import import_bundle
    from caretally.store.db import open_database

    engine = open_database(url, ORG)
    began = time.perf_counter()
    report = import_bundle(engine, ORG, Path(bundle))
    seconds = time.perf_counter() - began
    engine.dispose()
    return {"seconds": seconds, "ok": report.ok(), "problems": [str(p) for p in report.problems[:5]]}


def _child_bill(url: str) -> dict[str, Any]:
    import caretally
    from caretally.billing.payers import PayerRules
    from caretally.billing.run import bill_month
    from caretally.dates import parse_month
    from caretally.store.db import open_database

    engine = open_database(url, ORG)
    rules = PayerRules.load()
    cpu, began = _cpu(), time.perf_counter()
    result = bill_month(engine, ORG, parse_month(MONTH), rules)
    seconds, cpu = time.perf_counter() - began, _cpu() - cpu
    engine.dispose()
    return {
        "seconds": seconds,
        "cpu": cpu,
        "patients": result.summary.patients,
        "lines": result.summary.lines,
        "outcome": result.outcome,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "code": str(Path(caretally.__file__).parent),
    }


CHILDREN = {"synth": _child_synth, "import": _child_import, "bill": _child_bill}


def _child_main(step: str, args: list[str]) -> None:
    result = CHILDREN[step](*args)
    print(MARK + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------
# The parent
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    label: str  # before | after
    tree: Path

    def describe(self) -> str:
        return f"{self.tree} (git {git_head(self.tree)})"


def git_head(tree: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "--", "caretally"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")


def in_version(version: Version, step: str, *args: str) -> dict[str, Any]:
    """Run one child step with only ``version``'s tree ahead of the installed packages."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(version.tree)
    env.pop("PYTHONSTARTUP", None)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", step, *args],
        env=env,
        cwd=str(version.tree),
        capture_output=True,
        text=True,
        check=False,
    )
    found = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"{version.label}: {step} failed (exit {done.returncode}):\n" + "\n".join(tail))
    return dict(json.loads(found[-1][len(MARK) :]))


def fresh_copy(source: Path, target: Path) -> None:
    """A consistent copy of an SQLite database (WAL folded in), replacing ``target``."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


@dataclass(frozen=True)
class Pair:
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def wall_ratio(self) -> float:
        return float(self.after["seconds"]) / float(self.before["seconds"])

    @property
    def cpu_ratio(self) -> float:
        return float(self.after["cpu"]) / float(self.before["cpu"])


def run(args: argparse.Namespace, work: Path, say: Any) -> tuple[list[Pair], dict[str, Any]]:
    before, after = Version("before", args.before.resolve()), Version("after", args.after.resolve())
    bundle = work / "bundle"
    if not (bundle / "readings.csv").exists():
        say(f"synthesizing {args.patients:,} patients (with the after code) …")
        in_version(after, "synth", str(args.patients), str(bundle))
    imported: dict[str, Path] = {}
    imports: dict[str, float] = {}
    for version in (before, after):
        path = work / f"{version.label}-imported.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        say(f"importing with the {version.label} code …")
        result = in_version(version, "import", f"sqlite:///{path}", str(bundle))
        if not result["ok"]:
            raise SystemExit(f"{version.label}: import reported problems: {result['problems']}")
        imported[version.label], imports[version.label] = path, float(result["seconds"])
    pairs: list[Pair] = []
    for n in range(1, args.pairs + 1):
        measured: dict[str, dict[str, Any]] = {}
        for version in (before, after):
            db = work / f"{version.label}-run.db"
            fresh_copy(imported[version.label], db)
            measured[version.label] = result = in_version(version, "bill", f"sqlite:///{db}")
            if not result["code"].startswith(str(version.tree)):
                raise SystemExit(f"{version.label}: caretally was loaded from {result['code']}")
            say(
                f"pair {n} {version.label}: {result['seconds']:.1f} s wall, {result['cpu']:.1f} s CPU, "
                f"{result['lines']:,} lines, load {os.getloadavg()[0]:.2f}"
            )
        pairs.append(Pair(measured["before"], measured["after"]))
    facts = {
        "before": before.describe(),
        "after": after.describe(),
        "import seconds": f"before {imports['before']:.1f}, after {imports['after']:.1f}",
    }
    return pairs, facts


def report(pairs: list[Pair], patients: int) -> list[str]:
    lines = [
        "| pair | before wall s | after wall s | wall ratio | before CPU s | after CPU s | CPU ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, p in enumerate(pairs, 1):
        b, a = p.before, p.after
        lines.append(
            f"| {n} | {b['seconds']:.1f} | {a['seconds']:.1f} | {p.wall_ratio:.2f} | "
            f"{b['cpu']:.1f} | {a['cpu']:.1f} | {p.cpu_ratio:.2f} |"
        )
    med_b = statistics.median(p.before["seconds"] for p in pairs)
    med_a = statistics.median(p.after["seconds"] for p in pairs)
    cpu_b = statistics.median(p.before["cpu"] for p in pairs)
    cpu_a = statistics.median(p.after["cpu"] for p in pairs)
    lines.append(
        f"| median | {med_b:.1f} | {med_a:.1f} | **{statistics.median(p.wall_ratio for p in pairs):.2f}** | "
        f"{cpu_b:.1f} | {cpu_a:.1f} | **{statistics.median(p.cpu_ratio for p in pairs):.2f}** |"
    )
    first = pairs[0]
    lines += [
        "",
        f"{patients:,} patients billed for {MONTH}; claim lines: before "
        f"{first.before['lines']:,}, after {first.after['lines']:,}; peak MB of the run's process: "
        f"before {max(p.before['peak_mb'] for p in pairs):,.0f}, "
        f"after {max(p.after['peak_mb'] for p in pairs):,.0f}.",
    ]
    return lines


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "CPU": cpu,
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree of the old version")
    parser.add_argument("--after", type=Path, default=ROOT, help="source tree of the new version")
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--workdir", help="where the bundle and databases go (default: a new temp dir)")
    parser.add_argument("--results", type=Path, help="append the table to this file (e.g. bench/RESULTS.md)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["--child"]:
        _child_main(raw[1], raw[2:])
        return
    args = parse_args(raw)
    if args.pairs < 1:
        raise SystemExit("--pairs must be at least 1")

    def say(text: str) -> None:
        print(text, flush=True)

    command = "python " + shlex.join(["bench/compare.py", *raw])
    started = datetime.now(UTC)
    facts = machine()
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
        pairs, more = run(args, work, say)
    else:
        with tempfile.TemporaryDirectory(prefix="caretally-compare-") as tmp:
            pairs, more = run(args, Path(tmp), say)
    facts = {**more, **facts, "load average at end": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    body = report(pairs, args.patients)
    print("\n".join(body))
    if args.results is not None:
        stamp = started.strftime("%Y-%m-%d %H:%M UTC")
        block = [f"\n### Comparison of {stamp}\n", f"Command: `{command}`\n"]
        block += [f"- {k}: {v}" for k, v in facts.items()]
        block += ["", *body, ""]
        with args.results.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(block) + "\n")
        print(f"appended to {args.results}")


if __name__ == "__main__":
    main()
