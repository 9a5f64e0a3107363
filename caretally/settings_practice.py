"""The practice identity file: who bills, who submits, who receives.

Claims fail at the clearinghouse days later when an NPI has a typo or a field still says
``CHANGEME``, so the loader refuses such a file up front and lists every fault in one pass
(a practice fixing its settings should not discover the problems one at a time).

The file is TOML (read with ``tomllib``); docs/exports.md documents each key and
docs/practice.example.toml is a template that deliberately does not load until filled in.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from caretally.errors import Problem, ProblemsError
from caretally.ingest.values import is_valid_npi
from caretally.model import Address, PracticeIdentity

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


def parse_practice(data: Mapping[str, Any], source: Path) -> PracticeIdentity:
    """Build the identity from already-parsed TOML; raises with every problem found."""
    r = _Reader(source, data)
    r.unknown_keys(data, "", {"practice", "submitter", "receiver", "payer"})
    practice = r.table("practice")
    address = r.table("practice.address")
    submitter = r.table("submitter")
    receiver = r.table("receiver")
    payer = r.table("payer")
    r.unknown_keys(practice, "practice", {"name", "tin", "npi", "taxonomy", "address"})
    r.unknown_keys(address, "practice.address", {"line1", "line2", "city", "state", "postal_code"})
    r.unknown_keys(submitter, "submitter", {"id", "name", "contact_name", "contact_phone", "usage"})
    r.unknown_keys(receiver, "receiver", {"id", "name"})
    r.unknown_keys(payer, "payer", {"name", "id"})

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
    payer_name = r.text(payer, "payer.name", check=_max_len(60))
    payer_id = r.text(payer, "payer.id", check=_max_len(80))

    if r.problems:
        raise PracticeSettingsError(r.problems)
    # Every required value is present once no problem was recorded.
    assert name and tin and npi and line1 and city and state and postal
    assert sub_id and sub_name and contact and phone and rec_id and rec_name and payer_name and payer_id
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
        payer_name=payer_name,
        payer_id=payer_id,
        taxonomy_code=taxonomy,
        test_data=_USAGE[usage or "production"],
    )


def load_practice(path: Path) -> PracticeIdentity:
    """Read and check the practice TOML file; see docs/exports.md for the keys."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise PracticeSettingsError(
            [Problem(str(path), None, None, "not_found", "practice settings file not found")]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise PracticeSettingsError([Problem(str(path), None, None, "toml_syntax", str(exc))]) from exc
    return parse_practice(data, path)


def demo_practice() -> PracticeIdentity:
    """A made-up practice for the demo and tests; marked as test data (X12 ISA15 = T).

    The NPI is the check-digit example from the CMS NPI standard, and nothing here belongs to
    a real organization.
    """
    return PracticeIdentity(
        name="CARETALLY DEMO CLINIC",
        tin="990000001",
        npi="1234567893",
        address=Address(line1="100 EXAMPLE AVE", city="SPRINGFIELD", state="IL", postal_code="627010001"),
        submitter_id="CTDEMO",
        submitter_name="CARETALLY DEMO CLINIC",
        submitter_contact_name="DEMO BILLING OFFICE",
        submitter_contact_phone="2175550100",
        receiver_id="DEMORECEIVER",
        receiver_name="DEMO CLEARINGHOUSE",
        payer_name="DEMO MEDICARE CONTRACTOR",
        payer_id="00000DEMO",
        taxonomy_code="207Q00000X",
        test_data=True,
    )
