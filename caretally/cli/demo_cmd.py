"""``caretally demo``: the whole job on the embedded default, with no configuration.

Synthesizes a practice, imports it into a fresh SQLite file, bills the last complete
month, and writes the claims CSV, an 837P (marked as test data) and the explanations —
what a newcomer needs to see in half a minute.
"""

from __future__ import annotations

import shutil
import time
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from caretally.billing.exporting import export_month, write_explanations
from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month
from caretally.cli.bill_cmd import render_summary
from caretally.cli.common import console, err_console
from caretally.dates import add_months, month_of, parse_month
from caretally.ingest import import_bundle
from caretally.settings_practice import demo_practice
from caretally.store.db import DEFAULT_ORG, open_database
from caretally.synth import SynthConfig, synthesize


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        patients: Annotated[int, typer.Option("--patients", help="Synthetic patients.")] = 200,
        months: Annotated[int, typer.Option("--months", help="Months of data.")] = 3,
        seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same practice).")] = 7,
        start: Annotated[
            str | None, typer.Option("--start", help="First month, YYYY-MM (default: ends with last month).")
        ] = None,
        out: Annotated[Path, typer.Option("--out", help="Folder for the demo's files.")] = Path(
            "caretally-demo"
        ),
    ) -> None:
        """Synthesize a practice, import it into a fresh embedded database and bill its last month."""
        began = time.perf_counter()
        # By default the data ends with last month, the last complete one, which is billed.
        first = parse_month(start).start if start else add_months(date.today(), -months)
        last_month = month_of(add_months(first, months - 1))
        if out.exists():
            shutil.rmtree(out)
        bundle = out / "bundle"
        db_path = out / "caretally.db"
        url = f"sqlite:///{db_path}"

        with console.status("synthesizing the practice"):
            counts = synthesize(SynthConfig(patients=patients, start=first, months=months, seed=seed), bundle)
        console.print(
            f"Synthesized {counts.get('patients', 0)} patients, {counts.get('readings', 0):,} readings and "
            f"{counts.get('time_entries', 0):,} time entries "
            f"({first:%Y-%m} to {last_month.start:%Y-%m}) in {bundle}."
        )
        engine = open_database(url, DEFAULT_ORG)
        with console.status("importing"):
            report = import_bundle(engine, DEFAULT_ORG, bundle)
        if not report.ok():
            for p in report.problems[:20]:
                err_console.print(str(p))
            raise typer.Exit(1)
        console.print(f"Imported into {db_path}.")

        with console.status(f"billing {last_month.start:%Y-%m}"):
            result = bill_month(engine, DEFAULT_ORG, last_month, PayerRules.load())
        render_summary(result)

        month_text = result.month
        csv_path = out / f"claims-{month_text}.csv"
        x12_path = out / f"claims-{month_text}.837p.x12"
        explain_path = out / f"explanations-{month_text}.jsonl"
        export_month(engine, DEFAULT_ORG, month_text, "csv", csv_path)
        # The demo practice's payer directory routes each claim to its patient's payer.
        x12 = export_month(engine, DEFAULT_ORG, month_text, "x12", x12_path, practice=demo_practice())
        run = export_month(engine, DEFAULT_ORG, month_text, "json", out / f"claims-{month_text}.json").run
        explained = write_explanations(engine, run, explain_path)
        console.print()
        console.print(f"Claims (CSV):         {csv_path}")
        console.print(
            f"Claims (X12 837P):    {x12_path}  [dim](usage indicator T: synthetic test data)[/dim]"
        )
        for exported in x12.files:
            by_payer = ", ".join(f"{label} {n}" for label, n in exported.payers.items())
            console.print(f"                      [dim]claims by payer: {by_payer}[/dim]", highlight=False)
        console.print(
            f"Explanations (JSONL): {explain_path}  [dim]({explained:,} decisions with reasons)[/dim]"
        )
        console.print(f"Database:             {db_path}")
        console.print(
            f"Try: caretally explain --db {url} --month {month_text} --patient <id from the CSV>   "
            f"[dim](done in {time.perf_counter() - began:.1f} s)[/dim]"
        )
