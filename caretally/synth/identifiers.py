"""Identifiers that pass the real format checks: NPIs, Medicare Beneficiary Identifiers, serials.

A synthetic bundle is only useful if the importer and the claim exporters accept it, so
the NPI carries a correct Luhn check digit (computed over the ``80840`` card-issuer
prefix, as the NPI standard prescribes) and the MBI follows the CMS position rules.
"""

from __future__ import annotations

import hashlib
import random

NPI_PREFIX = "80840"

#: Letters CMS allows in an MBI: no S, L, O, I, B or Z (too easily misread).
MBI_LETTERS = "ACDEFGHJKMNPQRTUVWXY"
MBI_DIGITS = "0123456789"
MBI_ALNUM = MBI_LETTERS + MBI_DIGITS

#: Per position: which alphabet it draws from (C = 1-9, A = letter, N = digit, AN = either).
MBI_LAYOUT: tuple[str, ...] = (
    "123456789",
    MBI_LETTERS,
    MBI_ALNUM,
    MBI_DIGITS,
    MBI_LETTERS,
    MBI_ALNUM,
    MBI_DIGITS,
    MBI_LETTERS,
    MBI_LETTERS,
    MBI_DIGITS,
    MBI_DIGITS,
)


def luhn_check_digit(payload: str) -> int:
    """The digit that makes ``payload + digit`` pass the Luhn check."""
    total = 0
    # Walking right to left, the digit next to the (future) check digit is doubled first.
    for offset, char in enumerate(reversed(payload)):
        d = int(char)
        if offset % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def npi_from_base(base: str) -> str:
    """Completes a nine-digit NPI base (first digit 1 or 2) with its check digit."""
    if len(base) != 9 or not base.isdigit() or base[0] not in "12":
        raise ValueError(f"NPI base must be 9 digits starting with 1 or 2, got {base!r}")
    return base + str(luhn_check_digit(NPI_PREFIX + base))


def make_npi(rng: random.Random) -> str:
    """A random individual NPI (type 1 providers start with 1)."""
    return npi_from_base("1" + "".join(rng.choice(MBI_DIGITS) for _ in range(8)))


#: The part of an MBI that encodes a patient's ordinal, so ordinals below this many
#: get distinct MBIs without a shared "already used" set (workers stay independent).
MBI_UNIQUE_SPACE = 9 * 20 * 10 * 10 * 10 * 10
_MBI_STRIDE = 7919  # prime, coprime with MBI_UNIQUE_SPACE: index → slot is a bijection


def make_mbi(rng: random.Random, ordinal: int, salt: int = 0) -> str:
    """An MBI whose positions 1, 2, 4, 7, 10 and 11 spell a permutation of ``ordinal``.

    The remaining positions are random, so the identifiers do not look sequential.
    """
    slot = (ordinal * _MBI_STRIDE + salt) % MBI_UNIQUE_SPACE
    slot, d11 = divmod(slot, 10)
    slot, d10 = divmod(slot, 10)
    slot, d7 = divmod(slot, 10)
    slot, d4 = divmod(slot, 10)
    slot, a2 = divmod(slot, 20)
    c1 = slot  # 0..8
    chars = [rng.choice(alphabet) for alphabet in MBI_LAYOUT]
    chars[0] = MBI_LAYOUT[0][c1]
    chars[1] = MBI_LETTERS[a2]
    chars[3] = MBI_DIGITS[d4]
    chars[6] = MBI_DIGITS[d7]
    chars[9] = MBI_DIGITS[d10]
    chars[10] = MBI_DIGITS[d11]
    return "".join(chars)


# --------------------------------------------------------------------------------------
# Vendor serials (devices.hardware_id): what live ingest finds a device by.
# --------------------------------------------------------------------------------------

#: Models that talk to their vendor's cloud over a cellular modem: they carry an IMEI.
CELLULAR_MODELS = frozenset(
    {"Omron BP7250 cellular", "BodyTrace BT005", "iGlucose GM291", "Smart Meter iGlucose"}
)
#: Software: no hardware of its own, so no serial.
APP_MODELS = frozenset(
    {
        "Exer Health app",
        "Kemtai RTM app",
        "reSET-O companion",
        "Mindstrong app",
        "Woebot RTM",
        "Phone camera app",
    }
)


def hardware_id(seed: int, device_id: str, model: str) -> str:
    """A realistic, stable vendor serial for a synthetic device ("" for an app).

    Tenovi units get an activation id shaped like a UUID (Tenovi's ``hwi_device_id``),
    cellular devices a 15-digit IMEI with a valid check digit, Bluetooth devices a
    locally administered MAC address (``02:…``, so no real vendor's prefix is used).
    Derived from a hash of the seed and device id, so it draws nothing from the
    patient's random stream and the rest of the bundle is unchanged by it.
    """
    if model in APP_MODELS:
        return ""
    digest = hashlib.sha256(f"caretally-synth/{seed}/hardware/{device_id}".encode()).digest()
    if model.startswith("Tenovi"):
        text = digest[:16].hex()
        return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{'89ab'[digest[8] % 4]}{text[17:20]}-{text[20:32]}"
    if model in CELLULAR_MODELS:
        body = "35" + str(int.from_bytes(digest[:8], "big") % 10**12).zfill(12)
        return body + str(luhn_check_digit(body))
    return "02:" + ":".join(f"{b:02X}" for b in digest[:5])
