"""Practice settings kept per organization: the 837P identity, the locality, payer overlays.

An admin edits them on the Admin → Practice settings page; before this a server had only
``CARETALLY_PRACTICE_FILE`` (one TOML file, or a folder of ``<org id>.toml``). Both stay:
the organization's stored identity wins, the server's file is the fallback, so an
operator's file keeps working until an admin saves settings.

The identity is stored as the practice file's own TOML text and checked with the same
loader (``settings_practice.parse_practice``) before it is saved, so a saved identity is
always one the 837P export accepts, and every fault is listed at once. The locality and
payer overlays are what the organization's month runs are priced and judged with
(``run_settings``, read by the month-run job).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from caretally.errors import ProblemsError
from caretally.model import Payer, PracticeIdentity
from caretally.services import audit
from caretally.services.context import Actor
from caretally.services.errors import InvalidInput
from caretally.store import schema

_table = schema.practice_settings
LOCALITY = re.compile(r"^[A-Z]{2}-[0-9]{2}$")
_OVERLAY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class PracticeSettings:
    org_id: str
    identity_toml: str | None
    locality: str | None
    payer_overlays: dict[str, str]
    updated_by: str | None
    updated_at: datetime | None

    @property
    def has_identity(self) -> bool:
        return bool(self.identity_toml and self.identity_toml.strip())


def _read(engine: Engine, org_id: str) -> PracticeSettings:
    with engine.connect() as conn:
        row = conn.execute(select(_table).where(_table.c.org_id == org_id)).first()
    if row is None:
        return PracticeSettings(org_id, None, None, {}, None, None)
    return PracticeSettings(
        org_id,
        row.identity_toml,
        row.locality,
        {str(k): str(v) for k, v in (row.payer_overlays or {}).items()},
        row.updated_by,
        row.updated_at,
    )


def get_settings(engine: Engine, actor: Actor) -> PracticeSettings:
    """The organization's practice settings (no PHI: not audited)."""
    return _read(engine, actor.org_id)


def parse_identity(text: str) -> PracticeIdentity:
    """The identity in ``text`` (practice-file TOML), or ``InvalidInput`` naming each fault."""
    from caretally.settings_practice import parse_practice

    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(
            f"the practice identity is not valid TOML: {exc}", code="invalid_identity"
        ) from None
    try:
        return parse_practice(data, Path("practice settings"))
    except ProblemsError as exc:
        faults = "; ".join(p.message if not p.field else f"{p.field}: {p.message}" for p in exc.problems[:6])
        more = f" (and {len(exc.problems) - 6} more)" if len(exc.problems) > 6 else ""
        raise InvalidInput(
            f"the practice identity has {len(exc.problems)} problem(s): {faults}{more}",
            hint="docs/exports.md explains each key; docs/practice.example.toml is a template",
            code="invalid_identity",
            problems=exc.problems,
        ) from None


def parse_overlays(text: str) -> dict[str, str]:
    """``payer=overlay`` pairs, one a line or comma-separated (as ``--payer-rules`` takes them)."""
    known = {p.value for p in Payer}
    out: dict[str, str] = {}
    for item in re.split(r"[,\n]", text):
        item = item.strip()
        if not item:
            continue
        payer, sep, overlay = (part.strip() for part in item.partition("="))
        if not sep or payer not in known or not _OVERLAY.match(overlay):
            raise InvalidInput(
                f"payer overlay {item!r} is not payer=overlay with a payer of {', '.join(sorted(known))}",
                code="invalid_overlay",
            )
        out[payer] = overlay
    from caretally.rules.loader import RuleLoadError
    from caretally.services.months import payer_rules

    try:
        payer_rules(out)  # refuses an overlay the rules do not have
    except RuleLoadError:
        raise InvalidInput(
            f"the payer overlays name an overlay caretally does not have: {', '.join(out.values())}",
            hint="overlays are the files in caretally/rulesets/payers/ (without .yaml)",
            code="invalid_overlay",
        ) from None
    return out


def save_settings(
    engine: Engine,
    actor: Actor,
    *,
    identity_toml: str,
    locality: str,
    payer_overlays: str,
) -> PracticeSettings:
    """Check and store the organization's settings (recorded in the audit trail)."""
    identity = identity_toml.strip()
    if identity:
        parse_identity(identity)
    chosen = locality.strip().upper() or None
    if chosen is not None and not LOCALITY.match(chosen):
        raise InvalidInput(f"locality {locality!r} is not ST-NN (e.g. CO-01)", code="invalid_locality")
    overlays = parse_overlays(payer_overlays)
    with audit.audited(engine, actor, "practice_settings.update", "practice-settings") as (conn, note):
        conn.execute(delete(_table).where(_table.c.org_id == actor.org_id))
        conn.execute(
            insert(_table).values(
                org_id=actor.org_id,
                identity_toml=identity or None,
                locality=chosen,
                payer_overlays=overlays,
                updated_by=actor.actor[:120],
                updated_at=datetime.now(UTC),
            )
        )
        note.detail = {"identity": bool(identity), "locality": chosen, "payer_overlays": overlays}
    return _read(engine, actor.org_id)


def claims_identity(engine: Engine, actor: Actor, practice_file: str | None) -> PracticeIdentity | None:
    """Who bills the 837P and FHIR claims: the stored identity, else the server's file."""
    stored = _read(engine, actor.org_id)
    if stored.has_identity:
        return parse_identity(stored.identity_toml or "")
    from caretally.services.closing import practice_identity

    return practice_identity(practice_file, actor.org_id)


def run_settings(engine: Engine, org_id: str) -> tuple[Any, Any]:
    """``(BillingSettings, PayerRules)`` for a month run of the organization."""
    from caretally.billing.payers import PayerRules
    from caretally.billing.pricing import Pricing
    from caretally.billing.run import BillingSettings

    stored = _read(engine, org_id)
    overlays = dict(stored.payer_overlays)
    settings = BillingSettings(pricing=Pricing(locality=stored.locality), payer_overlays=overlays)
    return settings, PayerRules.load(overlays)


#: The demo practice (``settings_practice.demo_practice``) as practice-file TOML, stored for
#: the demo organization by ``caretally serve --demo``. Made up; marked as test data.
DEMO_IDENTITY_TOML = """\
[practice]
name = "CARETALLY DEMO CLINIC"
tin = "990000001"
npi = "1234567893"
taxonomy = "207Q00000X"

[practice.address]
line1 = "100 EXAMPLE AVE"
city = "SPRINGFIELD"
state = "IL"
postal_code = "627010001"

[submitter]
id = "CTDEMO"
name = "CARETALLY DEMO CLINIC"
contact_name = "DEMO BILLING OFFICE"
contact_phone = "2175550100"
usage = "test"

[receiver]
id = "DEMORECEIVER"
name = "DEMO CLEARINGHOUSE"

[payers.medicare]
name = "DEMO MEDICARE CONTRACTOR"
id = "00000DEMO"

[payers.medicare_advantage]
name = "DEMO MEDICARE ADVANTAGE"
id = "00000DEMOA"

[[payers.medicare_advantage.plans]]
plan = "demo-hmo"
member_id_pattern = "HUM[0-9]+"
name = "DEMO MEDICARE ADVANTAGE HMO"
id = "00000DEMOH"
filing_indicator = "HM"

[payers.medicaid]
name = "DEMO STATE MEDICAID"
id = "00000DEMOM"

[payers.commercial]
name = "DEMO COMMERCIAL HEALTH PLAN"
id = "00000DEMOC"
"""


def demo_identity_toml() -> str:
    """The demo TOML with the demo practice's fee schedule appended."""
    from caretally.settings_practice import DEMO_FEES

    fees = "\n".join(f"{code} = {amount}" for code, amount in sorted(DEMO_FEES.items()))
    return f"{DEMO_IDENTITY_TOML}\n[fees]\n{fees}\n"
