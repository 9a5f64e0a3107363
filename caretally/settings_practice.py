"""The practice identity file: who bills, who submits, who receives.

Claims fail at the clearinghouse days later when an NPI has a typo or a field still says
``CHANGEME``, so the loader refuses such a file up front and lists every fault in one pass
(a practice fixing its settings should not discover the problems one at a time).

The file is TOML (read with ``tomllib``); docs/exports.md documents each key and
docs/practice.example.toml is a template that deliberately does not load until filled in.

Beyond the identity it holds the payer directory (where each payer's claims go, with which
claim filing indicator and through which receiver) and the practice's fee schedule, because
both are facts about the practice that every export of every month needs alike.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from caretally.errors import Problem, ProblemsError
from caretally.export.x12_837p import FILING_CODES, FILING_INDICATOR
from caretally.ingest.values import is_valid_npi
from caretally.model import Address, Payer, PayerRoute, PracticeIdentity, Receiver

# Values that mean "nobody filled this in". Word-like ones match anywhere as a whole word;
# digit strings are the classic dummies that pass a naive length check.
_PLACEHOLDER_WORDS = re.compile(r"\b(CHANGEME|CHANGE[ _-]ME|TODO|TBD|FIXME|XXX+)\b", re.IGNORECASE)
_PLACEHOLDER_VALUES = frozenset({"000000000", "0000000000", "1234567890", "123456789"})

#: USPS codes for the states, DC and the territories/military that appear on US claims.
# fmt: off
US_STATES = frozenset({
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA",
    "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ",
    "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT",
    "VA", "WA", "WV", "WI", "WY", "DC", "PR", "VI", "GU", "AS", "MP", "AA", "AE", "AP",
})
# fmt: on

# X12 separators used by caretally's 837P; a value containing one would split an element.
_X12_DELIMITERS = frozenset("*~:^")

_USAGE = {"test": True, "production": False}


class PracticeSettingsError(ProblemsError):
    """The practice file is unusable; ``problems`` names every field at fault."""


def is_placeholder(value: str) -> bool:
    text = value.strip()
    if text.upper() in _PLACEHOLDER_VALUES or _PLACEHOLDER_WORDS.search(text):
        return True
    return text.startswith("<") and text.endswith(">")


class _Reader:
    """Reads typed values out of the parsed TOML while collecting problems."""

    def __init__(self, path: Path, data: Mapping[str, Any]):
        self.path = str(path)
        self.data = data
        self.problems: list[Problem] = []

    def problem(self, field: str, code: str, message: str) -> None:
        self.problems.append(Problem(self.path, None, field, code, message))

    def table(self, dotted: str, *, required: bool = True) -> Mapping[str, Any]:
        node: Any = self.data
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            if required:
                self.problem(dotted, "missing_table", f"table [{dotted}] is missing")
            return {}
        if not isinstance(node, Mapping):
            self.problem(dotted, "not_a_table", f"[{dotted}] must be a table")
            return {}
        return node

    def text(
        self,
        table: Mapping[str, Any],
        dotted: str,
        *,
        required: bool = True,
        normalize: Callable[[str], str] = str.strip,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        """A string value, normalized, then refused if missing, a placeholder or invalid."""
        key = dotted.rsplit(".", 1)[-1]
        raw = table.get(key)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if required:
                self.problem(dotted, "missing", "is required")
            return None
        if not isinstance(raw, str):
            self.problem(dotted, "not_text", f"must be a quoted string, got {raw!r}")
            return None
        value = normalize(raw)
        if is_placeholder(raw) or is_placeholder(value):
            self.problem(dotted, "placeholder", f"{raw.strip()!r} is a placeholder; put the real value here")
            return None
        if _X12_DELIMITERS & set(raw):
            self.problem(dotted, "delimiter", "must not contain any of * ~ : ^ (X12 separators)")
            return None
        if check is not None and (message := check(value)) is not None:
            self.problem(dotted, "invalid", message)
            return None
        return value

    def unknown_keys(self, table: Mapping[str, Any], dotted: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                where = f"{dotted}.{key}" if dotted else key
                self.problem(where, "unknown_key", f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _digits(value: str) -> str:
    return re.sub(r"[\s-]", "", value)


def _check_npi(value: str) -> str | None:
    if not (len(value) == 10 and value.isdigit()):
        return f"NPI must be 10 digits, got {value!r}"
    if not is_valid_npi(value):
        return f"NPI {value} fails the check digit (Luhn with prefix 80840): probably mistyped"
    return None


def _check_tin(value: str) -> str | None:
    if not (len(value) == 9 and value.isdigit()):
        return f"TIN (EIN) must be 9 digits, e.g. 12-3456789, got {value!r}"
    return None


def _check_state(value: str) -> str | None:
    if not (len(value) == 2 and value.isalpha()):
        return f"state must be a two-letter USPS code, got {value!r}"
    if value not in US_STATES:
        return f"{value!r} is not a USPS state or territory code"
    return None


def _check_zip9(value: str) -> str | None:
    # The 837P billing-provider address (loop 2010AA N403) must carry the full ZIP+4.
    if not (len(value) == 9 and value.isdigit()):
        return f"postal_code must be the 9-digit ZIP+4 (e.g. 12345-6789) claims require, got {value!r}"
    return None


def _check_taxonomy(value: str) -> str | None:
    if not re.fullmatch(r"[0-9]{3}[0-9A-Z]{6}X", value):
        return f"taxonomy must be a 10-character NUCC code like 207Q00000X, got {value!r}"
    return None


def _check_phone(value: str) -> str | None:
    if not (len(value) == 10 and value.isdigit()):
        return f"contact_phone must be a 10-digit US number, got {value!r}"
    return None


def _max_len(limit: int) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if len(value) <= limit else f"at most {limit} characters, got {len(value)}"

    return check


def _interchange_id(value: str) -> str | None:
    # ISA06/ISA08 are 15 characters and GS02/GS03 at most 15.
    if len(value) > 15:
        return f"at most 15 characters (X12 ISA/GS sender and receiver ids), got {len(value)}"
    if not re.fullmatch(r"[A-Za-z0-9 .\-]+", value):
        return f"only letters, digits, space, '.' and '-' are accepted, got {value!r}"
    return None


def _phone(value: str) -> str:
    digits = re.sub(r"[\s().+-]", "", value)
    return digits[1:] if len(digits) == 11 and digits.startswith("1") else digits


_ROUTE_KEYS = {"name", "id", "filing_indicator", "receiver", "own_interchange"}
_PLAN_KEYS = _ROUTE_KEYS | {"plan", "member_id_pattern"}
_CODE = re.compile(r"[A-Z0-9]{5}")


def _check_filing(value: str) -> str | None:
    if value not in FILING_CODES:
        return f"claim filing indicator must be one of {', '.join(sorted(FILING_CODES))}, got {value!r}"
    return None


def _check_pattern(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as exc:
        return f"member_id_pattern is not a valid regular expression: {exc}"
    return None


def _receivers(r: _Reader, default: Receiver | None) -> dict[str, Receiver]:
    table = r.table("receivers", required=False)
    out: dict[str, Receiver] = {}
    for key, node in table.items():
        where = f"receivers.{key}"
        if not isinstance(node, Mapping):
            r.problem(where, "not_a_table", f"[{where}] must be a table with id and name")
            continue
        r.unknown_keys(node, where, {"id", "name"})
        rec_id = r.text(node, f"{where}.id", check=_interchange_id)
        rec_name = r.text(node, f"{where}.name", check=_max_len(60))
        if rec_id and rec_name:
            out[key] = Receiver(rec_id, rec_name)
    if default is not None:
        out.setdefault("default", default)
    return out


def _route(
    r: _Reader,
    node: Mapping[str, Any],
    where: str,
    payer: Payer,
    label: str,
    receivers: Mapping[str, Receiver],
    default: Receiver | None,
    *,
    plan: str | None = None,
    pattern: str | None = None,
) -> PayerRoute | None:
    name = r.text(node, f"{where}.name", check=_max_len(60))
    payer_id = r.text(node, f"{where}.id", check=_max_len(80))
    filing = r.text(
        node,
        f"{where}.filing_indicator",
        required=False,
        normalize=lambda v: v.strip().upper(),
        check=_check_filing,
    )
    receiver_key = r.text(node, f"{where}.receiver", required=False)
    receiver = default
    if receiver_key is not None:
        receiver = receivers.get(receiver_key)
        if receiver is None:
            known = ", ".join(sorted(receivers)) or "none"
            message = f"no [receivers.{receiver_key}] (known: {known})"
            r.problem(f"{where}.receiver", "unknown_receiver", message)
    own = node.get("own_interchange", False)
    if not isinstance(own, bool):
        r.problem(f"{where}.own_interchange", "not_bool", f"must be true or false, got {own!r}")
        own = False
    if not (name and payer_id and receiver):
        return None
    return PayerRoute(
        payer=payer,
        label=label,
        name=name,
        payer_id=payer_id,
        filing_indicator=filing or FILING_INDICATOR[payer],
        receiver=receiver,
        plan=plan,
        member_id_pattern=pattern,
        own_interchange=own,
    )


def _payer_directory(
    r: _Reader, data: Mapping[str, Any], receivers: Mapping[str, Receiver], default: Receiver | None
) -> tuple[PayerRoute, ...]:
    """Named plans first (in file order), then each kind's default, so matching can stop early."""
    legacy = data.get("payer")
    payers = r.table("payers", required=False)
    if legacy is None and not payers:
        message = "the payer directory [payers.<payer>] (or the older [payer]) is missing"
        r.problem("payers", "missing_table", message)
        return ()
    plans: list[PayerRoute] = []
    defaults: list[PayerRoute] = []
    labels: set[str] = set()
    if legacy is not None:
        # The one-payer file of earlier versions named the Medicare contractor; it stays
        # that, so a Medicaid or commercial patient is refused rather than sent to Medicare.
        if "medicare" in payers:
            r.problem("payer", "conflict", "[payer] is the older spelling of [payers.medicare]; keep one")
        node = r.table("payer")
        r.unknown_keys(node, "payer", {"name", "id"})
        route = _route(r, node, "payer", Payer.MEDICARE, "medicare", receivers, default)
        if route is not None:
            defaults.append(route)
    kinds = {p.value: p for p in Payer}
    for kind, node in payers.items():
        where = f"payers.{kind}"
        if kind not in kinds:
            r.problem(where, "unknown_payer", f"unknown payer; the bundle's payers are {', '.join(kinds)}")
            continue
        if not isinstance(node, Mapping):
            r.problem(where, "not_a_table", f"[{where}] must be a table")
            continue
        payer = kinds[kind]
        r.unknown_keys(node, where, _ROUTE_KEYS | {"plans"})
        if "name" in node or "id" in node:
            route = _route(r, node, where, payer, kind, receivers, default)
            if route is not None:
                defaults.append(route)
        entries = node.get("plans", [])
        if not isinstance(entries, list):
            r.problem(f"{where}.plans", "not_a_list", f"write each plan as [[{where}.plans]]")
            continue
        for number, entry in enumerate(entries, start=1):
            at = f"{where}.plans[{number}]"
            if not isinstance(entry, Mapping):
                r.problem(at, "not_a_table", f"write each plan as [[{where}.plans]]")
                continue
            r.unknown_keys(entry, at, _PLAN_KEYS)
            plan = r.text(entry, f"{at}.plan", required=False)
            pattern = r.text(entry, f"{at}.member_id_pattern", required=False, check=_check_pattern)
            if plan is None and pattern is None and "plan" not in entry and "member_id_pattern" not in entry:
                r.problem(at, "no_match", "a plan needs plan (the patients' payer_plan) or member_id_pattern")
            # Messages and file names call a plan by its plan code, else by its payer name.
            label = f"{kind}/{plan or str(entry.get('name') or number).strip()}"
            if label in labels:
                label = f"{label}#{number}"
            labels.add(label)
            route = _route(r, entry, at, payer, label, receivers, default, plan=plan, pattern=pattern)
            if route is not None:
                plans.append(route)
    return tuple(plans + defaults)


def _fees(r: _Reader) -> tuple[tuple[str, Decimal], ...]:
    table = r.table("fees", required=False)
    fees: dict[str, Decimal] = {}
    for raw_code, raw in table.items():
        code = str(raw_code).strip().upper()
        where = f"fees.{raw_code}"
        if not _CODE.fullmatch(code):
            r.problem(where, "bad_code", f"{raw_code!r} is not a CPT/HCPCS code (5 letters or digits)")
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | Decimal | str):
            r.problem(where, "bad_money", f"must be an amount like 47.43, got {raw!r}")
            continue
        try:
            amount = Decimal(str(raw).strip())
        except InvalidOperation:
            r.problem(where, "bad_money", f"must be an amount like 47.43, got {raw!r}")
            continue
        if not amount.is_finite() or amount <= 0 or amount.as_tuple().exponent < -2:  # type: ignore[operator]
            r.problem(where, "bad_money", f"must be more than 0 with at most two decimals, got {raw!r}")
            continue
        if code in fees:
            r.problem(where, "duplicate_code", f"{code} is listed twice")
        fees[code] = amount
    return tuple(sorted(fees.items()))


def parse_practice(data: Mapping[str, Any], source: Path) -> PracticeIdentity:
    """Build the identity from already-parsed TOML; raises with every problem found."""
    r = _Reader(source, data)
    r.unknown_keys(data, "", {"practice", "submitter", "receiver", "receivers", "payer", "payers", "fees"})
    practice = r.table("practice")
    address = r.table("practice.address")
    submitter = r.table("submitter")
    receiver = r.table("receiver")
    r.unknown_keys(practice, "practice", {"name", "tin", "npi", "taxonomy", "address"})
    r.unknown_keys(address, "practice.address", {"line1", "line2", "city", "state", "postal_code"})
    r.unknown_keys(submitter, "submitter", {"id", "name", "contact_name", "contact_phone", "usage"})
    r.unknown_keys(receiver, "receiver", {"id", "name"})

    name = r.text(practice, "practice.name", check=_max_len(60))
    tin = r.text(practice, "practice.tin", normalize=_digits, check=_check_tin)
    npi = r.text(practice, "practice.npi", normalize=_digits, check=_check_npi)
    taxonomy = r.text(
        practice,
        "practice.taxonomy",
        required=False,
        normalize=lambda v: v.strip().upper(),
        check=_check_taxonomy,
    )
    line1 = r.text(address, "practice.address.line1", check=_max_len(55))
    line2 = r.text(address, "practice.address.line2", required=False, check=_max_len(55))
    city = r.text(address, "practice.address.city", check=_max_len(30))
    state = r.text(
        address, "practice.address.state", normalize=lambda v: v.strip().upper(), check=_check_state
    )
    postal = r.text(address, "practice.address.postal_code", normalize=_digits, check=_check_zip9)
    sub_id = r.text(submitter, "submitter.id", check=_interchange_id)
    sub_name = r.text(submitter, "submitter.name", check=_max_len(60))
    contact = r.text(submitter, "submitter.contact_name", check=_max_len(60))
    phone = r.text(submitter, "submitter.contact_phone", normalize=_phone, check=_check_phone)
    usage = r.text(
        submitter,
        "submitter.usage",
        required=False,
        normalize=lambda v: v.strip().lower(),
        check=lambda v: None if v in _USAGE else f"usage must be 'test' or 'production', got {v!r}",
    )
    rec_id = r.text(receiver, "receiver.id", check=_interchange_id)
    rec_name = r.text(receiver, "receiver.name", check=_max_len(60))
    default = Receiver(rec_id, rec_name) if rec_id and rec_name else None
    receivers = _receivers(r, default)
    payers = _payer_directory(r, data, receivers, default)
    fees = _fees(r)

    if r.problems:
        raise PracticeSettingsError(r.problems)
    # Every required value is present once no problem was recorded.
    assert name and tin and npi and line1 and city and state and postal
    assert sub_id and sub_name and contact and phone and rec_id and rec_name
    return PracticeIdentity(
        name=name,
        tin=tin,
        npi=npi,
        address=Address(line1=line1, city=city, state=state, postal_code=postal, line2=line2),
        submitter_id=sub_id,
        submitter_name=sub_name,
        submitter_contact_name=contact,
        submitter_contact_phone=phone,
        receiver_id=rec_id,
        receiver_name=rec_name,
        payers=payers,
        taxonomy_code=taxonomy,
        test_data=_USAGE[usage or "production"],
        fees=fees,
    )


def load_practice(path: Path) -> PracticeIdentity:
    """Read and check the practice TOML file; see docs/exports.md for the keys."""
    try:
        with path.open("rb") as fh:
            # Decimal, not float: a fee of 47.43 must stay exactly 47.43.
            data = tomllib.load(fh, parse_float=Decimal)
    except FileNotFoundError:
        raise PracticeSettingsError(
            [Problem(str(path), None, None, "not_found", "practice settings file not found")]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise PracticeSettingsError([Problem(str(path), None, None, "toml_syntax", str(exc))]) from exc
    except OSError as exc:
        message = f"cannot read the practice settings file: {exc.strerror or exc}"
        raise PracticeSettingsError([Problem(str(path), None, None, "unreadable", message)]) from None
    return parse_practice(data, path)


#: The demo practice's made-up charges per unit, one for every code of the embedded rule-years
#: (some, like 98986, have no national amount, so the expected payment cannot stand in).
# fmt: off
DEMO_FEES: dict[str, str] = {
    "98975": "40.00", "98976": "100.00", "98977": "100.00", "98978": "100.00", "98979": "50.00",
    "98980": "90.00", "98981": "75.00", "98984": "60.00", "98985": "60.00", "98986": "60.00",
    "99091": "95.00", "99424": "140.00", "99425": "100.00", "99426": "110.00", "99427": "85.00",
    "99437": "90.00", "99439": "80.00", "99445": "60.00", "99453": "40.00", "99454": "85.00",
    "99457": "90.00", "99458": "75.00", "99470": "50.00", "99487": "230.00", "99489": "120.00",
    "99490": "110.00", "99491": "145.00",
}
# fmt: on


def demo_practice() -> PracticeIdentity:
    """A made-up practice for the demo and tests; marked as test data (X12 ISA15 = T).

    The NPI is the check-digit example from the CMS NPI standard, and nothing here belongs to
    a real organization. Its payer directory covers every payer the synthetic practice has,
    with one named Medicare Advantage plan (member ids starting ``HUM``) that wants ``HM``,
    so the demo's 837P shows claims routed to four payers and a plan. Its fee schedule
    (:data:`DEMO_FEES`) is invented too.
    """
    clearinghouse = Receiver("DEMORECEIVER", "DEMO CLEARINGHOUSE")

    def route(payer: Payer, label: str, name: str, payer_id: str, **extra: Any) -> PayerRoute:
        filing = extra.pop("filing_indicator", FILING_INDICATOR[payer])
        return PayerRoute(payer, label, name, payer_id, filing, clearinghouse, **extra)

    return PracticeIdentity(
        name="CARETALLY DEMO CLINIC",
        tin="990000001",
        npi="1234567893",
        address=Address(line1="100 EXAMPLE AVE", city="SPRINGFIELD", state="IL", postal_code="627010001"),
        submitter_id="CTDEMO",
        submitter_name="CARETALLY DEMO CLINIC",
        submitter_contact_name="DEMO BILLING OFFICE",
        submitter_contact_phone="2175550100",
        receiver_id=clearinghouse.id,
        receiver_name=clearinghouse.name,
        payers=(
            route(
                Payer.MEDICARE_ADVANTAGE,
                "medicare_advantage/DEMO MEDICARE ADVANTAGE HMO",
                "DEMO MEDICARE ADVANTAGE HMO",
                "00000DEMOH",
                filing_indicator="HM",
                member_id_pattern=r"HUM[0-9]+",
            ),
            route(Payer.MEDICARE, "medicare", "DEMO MEDICARE CONTRACTOR", "00000DEMO"),
            route(Payer.MEDICARE_ADVANTAGE, "medicare_advantage", "DEMO MEDICARE ADVANTAGE", "00000DEMOA"),
            route(Payer.MEDICAID, "medicaid", "DEMO STATE MEDICAID", "00000DEMOM"),
            route(Payer.COMMERCIAL, "commercial", "DEMO COMMERCIAL HEALTH PLAN", "00000DEMOC"),
        ),
        taxonomy_code="207Q00000X",
        test_data=True,
        fees=tuple((code, Decimal(amount)) for code, amount in sorted(DEMO_FEES.items())),
    )
