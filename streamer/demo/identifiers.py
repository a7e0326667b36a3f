"""Valid-looking payment identifiers: PII detectors must be tested on numbers that pass their checksums."""

from __future__ import annotations

import random
import string

__all__ = ["valid_iban", "valid_luhn_card"]

_CARD_PREFIXES: tuple[tuple[str, int], ...] = (
    ("4", 16),
    ("4", 16),
    ("51", 16),
    ("53", 16),
    ("55", 16),
    ("2221", 16),
    ("34", 15),
    ("37", 15),
    ("6011", 16),
)


def _luhn_check_digit(payload: str) -> str:
    """Digit that makes ``payload + digit`` pass Luhn (positions are counted from the check digit)."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def valid_luhn_card(rng: random.Random) -> str:
    """A random card number (Visa, Mastercard, Amex or Discover prefix) that passes the Luhn check.

    Returned as plain digits; callers format it (spaces, dashes) as a customer would type it.
    """
    prefix, length = rng.choice(_CARD_PREFIXES)
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return body + _luhn_check_digit(body)


# BBAN layouts per country: n = digit, a = upper-case letter, c = digit or letter.
_IBAN_LAYOUT: dict[str, str] = {
    "DE": "n" * 18,
    "AT": "n" * 16,
    "BE": "n" * 12,
    "CH": "n" * 5 + "c" * 12,
    "ES": "n" * 20,
    "FR": "n" * 10 + "c" * 11 + "n" * 2,
    "GB": "aaaa" + "n" * 14,
    "IT": "a" + "n" * 10 + "c" * 12,
    "NL": "aaaa" + "n" * 10,
    "PL": "n" * 24,
}
_IBAN_CHARS = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + string.ascii_uppercase}


def _mod97(text: str) -> int:
    return int("".join(str(int(ch, 36)) for ch in text)) % 97


def valid_iban(rng: random.Random, country: str = "DE") -> str:
    """A random IBAN for ``country`` with correct length and ISO 13616 mod-97 check digits (compact form).

    Raises ``ValueError`` for a country without a known layout.
    """
    country = country.upper()
    layout = _IBAN_LAYOUT.get(country)
    if layout is None:
        raise ValueError(f"no IBAN layout for country {country!r}; known: {sorted(_IBAN_LAYOUT)}")
    bban = "".join(rng.choice(_IBAN_CHARS[kind]) for kind in layout)
    check = 98 - _mod97(bban + country + "00")
    return f"{country}{check:02d}{bban}"
