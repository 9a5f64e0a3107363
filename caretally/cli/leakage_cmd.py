"""``caretally leakage``: the money a closed month left on the table, by reason."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from caretally.cli.billing_options import PayerRulesOption, parse_overlays
from caretally.cli.common import (
    DEFAULT_ORG_ID,
    CsvOption,
    DbOption,
    JsonOption,
    MonthOption,
    OrgOption,
    UserError,
    console,
    open_db,
    print_json,
    progress_bar,
    write_csv,
)
from caretally.dates import parse_month

#: ``caretally.leakage``'s defaults, repeated so `leakage --help` does not load the engine
#: (a test holds them equal).
DAYS_WINDOW = 3
MINUTES_WINDOW = 5

CSV_HEADER = (
    "patient_id",
    "enrollment_id",
    "code",
    "period_start",
    "period_end",
    "reason",
    "value",
    "detail",
)


def register(app: typer.Typer) -> None:
    @app.command("leakage")
    def leakage(
        month: MonthOption,
        days_window: Annotated[
            int, typer.Option("--days-window", help="Days short that count as near.")
        ] = DAYS_WINDOW,
        minutes_window: Annotated[
            int, typer.Option("--minutes-window", help="Minutes short that count as near.")
        ] = MINUTES_WINDOW,
        show: Annotated[int, typer.Option("--show", help="Near misses to list after the summary.")] = 15,
        payer_rules: PayerRulesOption = None,
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG_ID,
        as_json: JsonOption = False,
        as_csv: CsvOption = False,
    ) -> None:
        """What the month would have earned had each near miss been reached, in money and patients."""
        if as_json and as_csv:
            raise UserError("--json and --csv cannot be combined", "choose one output format", 2)
        from caretally.billing.payers import PayerRules
        from caretally.leakage import BUCKETS, leakage_report

        engine = open_db(db_url, org)
        rules = PayerRules.load(parse_overlays(payer_rules))
        with progress_bar(f"leakage of {month}") as progress:
            report = leakage_report(
                engine,
                org,
                parse_month(month),
                rules,
                days_window=days_window,
                minutes_window=minutes_window,
                progress=progress,
            )
        if as_json:
            print_json(report.to_json())
            return
        if as_csv:
            misses = sorted(report.misses, key=lambda m: (-m.value, m.patient_id, m.code))
            write_csv(
                (
                    [
                        m.patient_id,
                        m.enrollment_id,
                        m.code,
                        m.period.start,
                        m.period.end,
                        m.bucket,
                        BUCKETS[m.bucket],
                        m.value,
                        m.detail,
                    ]
                    for m in misses
                ),
                CSV_HEADER,
            )
            return
        patients = len({m.patient_id for m in report.misses})
        console.print(
            f"[bold]{month}[/bold]: billed ${report.billed:,.2f}; near misses worth "
            f"[bold red]${report.total:,.2f}[/bold red] across {patients} patients."
        )
        table = Table(title="Leakage by reason", show_footer=True)
        table.add_column("reason", footer="total")
        table.add_column("near misses", justify="right", footer=str(len(report.misses)))
        table.add_column("patients", justify="right", footer=str(len({m.patient_id for m in report.misses})))
        table.add_column("value", justify="right", footer=f"${report.total:,.2f}")
        for bucket, (count, patients, value) in report.by_bucket().items():
            table.add_row(BUCKETS[bucket], str(count), str(patients), f"${value:,.2f}")
        console.print(table)
        if show and report.misses:
            top = sorted(report.misses, key=lambda m: (-m.value, m.patient_id))[:show]
            detail = Table(title=f"Largest {len(top)} near misses")
            for col in ("patient", "code", "period", "value", "why"):
                detail.add_column(col, overflow="fold")
            for m in top:
                detail.add_row(
                    m.patient_id, m.code, f"{m.period.start}..{m.period.end}", f"${m.value:,.2f}", m.detail
                )
            console.print(detail)
