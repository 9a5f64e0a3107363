"""``caretally synth``: write a synthetic practice bundle for demos, tests and benchmarks."""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from caretally.cli.common import console, err_console
from caretally.synth import SynthConfig, synthesize
from caretally.synth.config import DEFAULT_START, FORMATS


def _parse_start(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError as exc:
        raise typer.BadParameter(f"expected YYYY-MM-DD, got {text!r}") from exc


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth(
        out: Annotated[
            Path, typer.Option("--out", help="Folder to write the bundle into (created if missing).")
        ],
        patients: Annotated[int, typer.Option("--patients", min=0, help="Number of patients.")] = 100,
        start: Annotated[
            str, typer.Option("--start", help="First day covered, YYYY-MM-DD (ideally a month's 1st).")
        ] = DEFAULT_START.isoformat(),
        months: Annotated[int, typer.Option("--months", min=1, help="Calendar months covered.")] = 1,
        seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 1,
        fmt: Annotated[str, typer.Option("--format", help="csv or jsonl.")] = "csv",
        lead_in_days: Annotated[
            int,
            typer.Option(
                "--lead-in-days",
                min=0,
                max=366,
                help="Also write readings for this many days before --start, so the 30-day "
                "device periods that end in the first month are complete (29 does that).",
            ),
        ] = 0,
    ) -> None:
        """Generate a realistic practice: patients, staff, enrollments, devices, readings, time."""
        if fmt not in FORMATS:
            raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
        config = SynthConfig(
            patients=patients,
            start=_parse_start(start),
            months=months,
            seed=seed,
            fmt=fmt,
            lead_in_days=lead_in_days,
        )
        began = time.perf_counter()
        # A progress bar only where it is worth watching (it goes to stderr).
        counts = _with_progress(config, out) if patients >= 5000 else synthesize(config, out)
        elapsed = time.perf_counter() - began

        table = Table(title=f"Synthetic bundle in {out}")
        table.add_column("file")
        table.add_column("rows", justify="right")
        for stem, count in counts.items():
            table.add_row(f"{stem}.{fmt}", f"{count:,}")
        table.add_row("total", f"{sum(counts.values()):,}", style="bold")
        console.print(table)
        seconds = max(elapsed, 1e-9)
        console.print(
            f"{patients:,} patients × {months} month(s) from {config.start} (seed {seed}) "
            f"in {elapsed:.2f} s — {patients / seconds:,.0f} patients/s, "
            f"{counts['readings'] / seconds:,.0f} readings/s"
        )


def _with_progress(config: SynthConfig, out: Path) -> dict[str, int]:
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("generating patients", total=config.patients)
        return synthesize(config, out, progress=lambda done: bar.update(task, completed=done))
