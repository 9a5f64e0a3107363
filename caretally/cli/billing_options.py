"""Options shared by the commands that price and bill (bill, demo, worklist)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from caretally.model import Payer

if TYPE_CHECKING:  # the billing stack is imported when a command runs, not when it is listed
    from caretally.billing.payers import PayerRules
    from caretally.billing.run import BillingSettings

LocalityOption = Annotated[
    str | None,
    typer.Option("--locality", help="Medicare locality as ST-NN (e.g. CO-01) for RVU × GPCI pricing."),
]
FeeScheduleOption = Annotated[
    Path | None, typer.Option("--fee-schedule", help="CSV with code,charge: the practice's charges per unit.")
]
PosOption = Annotated[str, typer.Option("--pos", help="Place of service code on every line.")]
QpOption = Annotated[bool, typer.Option("--qp", help="The practice is a qualifying APM participant (QP CF).")]
GpciOption = Annotated[
    Path | None, typer.Option("--gpci", help="A CMS Addendum E GPCI file for newer years.")
]
PayerRulesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--payer-rules",
        help="PAYER=OVERLAY, e.g. commercial=example-commercial (repeatable). Others use Medicare rules.",
    ),
]


def parse_overlays(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        payer, sep, overlay = item.partition("=")
        if not sep and item:  # a bare overlay name: every non-Medicare payer (the old explain form)
            out.update({p.value: item for p in Payer if p is not Payer.MEDICARE})
            continue
        if not sep or payer not in {p.value for p in Payer}:
            raise typer.BadParameter(
                f"expected PAYER=OVERLAY with PAYER one of {[p.value for p in Payer]}: {item}"
            )
        out[payer] = overlay
    return out


def settings_from(
    locality: str | None,
    fee_schedule: Path | None,
    pos: str,
    qp: bool,
    gpci: Path | None,
    payer_rules: list[str] | None,
) -> tuple[BillingSettings, PayerRules]:
    from caretally.billing.payers import PayerRules
    from caretally.billing.pricing import Pricing, load_fee_schedule
    from caretally.billing.run import BillingSettings

    overlays = parse_overlays(payer_rules)
    if not (len(pos) == 2 and pos.isdigit()):
        raise typer.BadParameter(f"place of service must be two digits, got {pos!r}")
    pricing = Pricing(
        locality=locality,
        qualifying_apm=qp,
        fee_schedule=load_fee_schedule(fee_schedule) if fee_schedule else {},
        gpci_path=gpci,
    )
    return BillingSettings(place_of_service=pos, pricing=pricing, payer_overlays=overlays), PayerRules.load(
        overlays
    )
