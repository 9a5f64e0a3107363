"""Every registered command, run as a real process with bad arguments: one line, never a traceback.

The commands are found by walking the Click tree the app builds, so a command added
later is covered without touching this file; a required parameter this file has no
filler for fails the test, on purpose.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import typer
from typer.main import get_command

from caretally.cli.main import COMMAND_MODULES, COMMAND_NAMES, build_app

#: Values for required parameters, by parameter name, that are well-formed but lead nowhere.
FILLERS = {
    "month": "2026-03",
    "as_of": "2026-03-31",
    "patient": "P1",
    "fmt": "csv",
    "on": "2026-03-01",
    "run_id": "no-such-run",
    "org_id": "acme",
    "name": "Acme",
    "email": "someone@acme.example",
    "role": "auditor",
    "old": "2026",
    "new": "2027",
    "year": "2026",
    "release": "B",
}
UNREACHABLE = "postgresql://nobody@127.0.0.1:9/none"


def _walk(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in sorted(subcommands.items()):
            yield from _walk(sub, (*path, name))
    else:
        yield path, command


def all_commands() -> list[tuple[tuple[str, ...], object]]:
    return list(_walk(get_command(build_app())))


def _required(command: object, tmp: Path) -> list[str]:
    args: list[str] = []
    for param in command.params:  # type: ignore[attr-defined]
        if not param.required:
            continue
        if param.name in FILLERS:
            value = FILLERS[param.name]
        elif param.name in ("source", "out", "file"):
            value = str(tmp / "nowhere")
        else:
            raise AssertionError(f"no filler for required parameter {param.name!r}; add one to FILLERS")
        args += [value] if param.param_type_name == "argument" else [param.opts[0], value]
    return args


def _options(command: object) -> set[str]:
    return {opt for p in command.params for opt in p.opts}  # type: ignore[attr-defined]


def _with(args: list[str], option: str, value: str) -> list[str]:
    """``args`` with ``option`` set to ``value`` (replacing a filler if present)."""
    if option in args:
        out = list(args)
        out[out.index(option) + 1] = value
        return out
    return [*args, option, value]


def cases(tmp: Path, good_db: str) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = [("no such command", ["no-such-command"])]
    for path, command in all_commands():
        name = " ".join(path)
        base = [*path, *_required(command, tmp)]
        options = _options(command)
        found.append((f"{name}: unknown option", [*base, "--no-such-option"]))
        if "--db" in options:
            found.append((f"{name}: bad --db URL", [*base, "--db", "not a url"]))
            found.append((f"{name}: unreachable server", [*base, "--db", UNREACHABLE]))
            if "--month" in options:
                found.append(
                    (f"{name}: --month 2026-13", _with([*base, "--db", good_db], "--month", "2026-13"))
                )
            if "--as-of" in options:
                found.append(
                    (f"{name}: --as-of 2026-10-32", _with([*base, "--db", good_db], "--as-of", "2026-10-32"))
                )
        elif "--month" in options:
            found.append((f"{name}: --month 2026-13", _with(base, "--month", "2026-13")))
        if "--date" in options:
            found.append((f"{name}: --date 2026-02-30", _with(base, "--date", "2026-02-30")))
    return found


def run_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caretally.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=env.get("CWD") if env else None,
    )


@pytest.mark.slow
def test_every_command_with_bad_arguments_fails_in_one_line(tmp_path: Path) -> None:
    good_db = f"sqlite:///{tmp_path / 'ok.db'}"
    assert run_cli(["db", "upgrade", "--db", good_db]).returncode == 0
    todo = cases(tmp_path, good_db)
    assert len(todo) > 30  # the walk really found the commands
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda case: (case, run_cli(case[1])), todo))
    failures = []
    for (label, _args), done in results:
        if "Traceback" in done.stderr or done.returncode not in (1, 2) or not done.stderr.strip():
            failures.append(f"{label}: exit {done.returncode}: {done.stderr[-800:]}")
        first = done.stderr.strip().splitlines()[0] if done.stderr.strip() else ""
        if not (first.startswith("caretally: ") or ": " in first):
            failures.append(f"{label}: first line is not a message: {first!r}")
    assert not failures, "\n".join(failures)


def test_missing_folder_and_locked_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    assert run_cli(["db", "upgrade", "--db", url]).returncode == 0
    missing = run_cli(["import", str(tmp_path / "nowhere"), "--db", url])
    assert (
        missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    )

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "practitioners.csv").write_text("practitioner_id,name,credential\nRN1,Cy Park,RN\n")
    holder = sqlite3.connect(tmp_path / "locked.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        locked = run_cli(["import", str(bundle), "--db", url], env={"CARETALLY_LOCK_TIMEOUT": "0.2"})
    finally:
        holder.rollback()
        holder.close()
    assert locked.returncode == 2, locked.stderr
    assert "Traceback" not in locked.stderr
    assert "is locked by another process" in locked.stderr and "hint:" in locked.stderr


def test_version_loads_no_command_nor_the_icd_tables() -> None:
    probe = (
        "import sys\n"
        "from caretally.cli.main import run\n"
        "try:\n    run(['--version'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('simple_icd_10_cm', 'sqlalchemy', 'caretally.cli.')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("caretally ")
    assert done.stdout.splitlines()[-1] == "['caretally.cli.main']"


def test_import_command_does_not_load_the_icd_tables_until_diagnoses_are_read() -> None:
    probe = (
        "import sys\n"
        "from caretally.cli.main import build_app, modules_for\n"
        "build_app(modules_for(['import', 'x']))\n"
        "print('simple_icd_10_cm' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_command_names_map_to_the_modules_that_register_them(module: str) -> None:
    app = typer.Typer()
    importlib.import_module(module).register(app)
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert names and all(COMMAND_NAMES[n] == module for n in names)
    assert set(COMMAND_NAMES.values()) == set(COMMAND_MODULES)


@pytest.mark.parametrize("command", ["import", "worklist", "leakage", "runs", "imports"])
def test_listing_a_command_loads_no_database_stack(command: str) -> None:
    probe = (
        "import sys\n"
        "from caretally.cli.main import build_app, modules_for\n"
        f"build_app(modules_for([{command!r}]))\n"
        "print('sqlalchemy' in sys.modules, 'simple_icd_10_cm' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False False", done.stderr
