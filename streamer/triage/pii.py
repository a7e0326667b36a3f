"""Find personal data in ticket and log text and replace it with typed, numbered placeholders.

Redacted text is what leaves the triage core (escalations to the large model, enriched records), so
detection leans towards recall where a checksum or a strong shape backs it, and uses context words
only to settle genuinely ambiguous digit runs.

Placeholder format: ``[KIND_N]``, e.g. ``[EMAIL_1]``, ``[PHONE_2]``. ``N`` numbers the *distinct* values
of one kind within one text, in order of first appearance, starting at 1: the same address written
twice is ``[EMAIL_1]`` both times, a second address is ``[EMAIL_2]``. Values are compared after a
light normalisation (emails case-folded, phone/card digits only, IBANs without spaces, IPs in
canonical form). Numbers are local to one text (``redact``) or one record's fields (``redact_all``) on
purpose, so nothing links two tickets. If the input already carries placeholders of a kind (text
redacted upstream), numbering continues after the highest one present instead of reusing it.

Kinds: ``EMAIL``, ``PHONE``, ``CARD``, ``IBAN``, ``NATIONAL_ID``, ``IP`` and ``CREDENTIAL`` (the
``user:password`` part of a URL such as ``https://bob:hunter2@ftp.example.com``).

Guarantees (tested with property tests):

* ``redact`` never raises, whatever the input;
* no value reported by ``find_pii`` survives in ``redact(text).text``: once a string is known to be
  personal data, *every* literal occurrence of it is redacted, even where its context alone would not
  have been enough (``version 1.2.3.4`` is a version, unless ``1.2.3.4`` was also seen as an address)
  and even inside a longer token;
* redaction is idempotent: ``redact(redact(t).text).text == redact(t).text``. Detection re-runs on the
  partially masked text until nothing new is found, so a match that only becomes visible once a
  neighbouring span is gone is caught in the same call, not in a second one.

Decisions on ambiguous shapes:

* Cards: 13-19 digits, unbroken or grouped the way cards are printed (fours, Amex 4-6-5) with
  single spaces or dashes, a known issuer prefix/length and a passing Luhn check. Anything failing
  Luhn is not a card (order and tracking numbers). An unbroken run of more than 19 digits is an id
  or a hash, never a card; in a spaced run (``4111 1111 1111 1111 123``) the card is found on group
  boundaries. Other groupings (``41111 11111 111111``) are cards only with a card word just before
  (card, visa, cc...). Cards, IBANs (also dashed) and international phones may be split by a line break
  where a text was wrapped.
* Phones: ``+CC ...`` and formatted national numbers (``(555) 123-4567``, ``555-123-4567``,
  ``07700 900123``, ``030/1234567``, ``01 23 45 67 89``) are phones by shape. Bare digit runs
  (``5551234567``, ``07700900123``) and 7-digit locals (``555-1234``) need a phone word nearby
  (phone, call, mobile, tel, whatsapp, number...). Any non-``+`` number directly labelled as
  something else (``order 555-123-4567``, ``invoice no. 0123 456 789``) is left to extraction.
  Dates (``01.02.2024``), amounts (``1,234,567.89``) and decimals never match.
* IPv4 literals are addresses unless directly labelled as a version (``v1.2.3.4``, ``version
  1.2.3.4``, ``build 10.0.0.1``, ``fw: 2.0.0.1``, ``Chrome/120.0.0.0``); "updated to 8.8.8.8" stays
  an address, since resolvers and gateways get updated too. IPv6 needs at least four hex digits, so
  ``::1`` and ``a::b`` are left alone; times and MAC addresses fail validation.
* Emails may have apostrophes (``mark.o'brien@...``), quoted local parts (``"john doe"@...``), IDN
  hosts in any script and punycode top-level domains (``xn--p1ai``); an opening quote is not part of one.
* Emails inside URLs (``?email=a@b.com``, ``a%40b.com``) are redacted. ``https://alice@example.com/``
  is redacted as an email (a login that looks like an address is personal); ``https://deploy@host/``
  (no dot in the host) is not; ``https://user:secret@host/`` redacts ``user:secret`` as CREDENTIAL.
* National ids: US SSN (``123-45-6789``; area 000/666/9xx, group 00 and serial 0000 excluded; bare
  nine digits only after "SSN"/"social security"), UK NI number (issuable prefixes only), Spanish
  DNI/NIE (check letter) and Italian codice fiscale (check character).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "KINDS",
    "PiiSpan",
    "Redaction",
    "find_ips_only",
    "find_pii",
    "mask_kinds",
    "normalise",
    "placeholder",
    "redact",
    "redact_all",
    "redact_spans",
]

#: Every kind ``find_pii`` can report, in the order overlaps are resolved (earlier wins).
KINDS: Final = ("CREDENTIAL", "EMAIL", "IBAN", "CARD", "NATIONAL_ID", "IP", "PHONE")
_RANK: Final = {kind: i for i, kind in enumerate(KINDS)}


@dataclass(frozen=True, slots=True)
class PiiSpan:
    """One occurrence of personal data: ``text[start:end] == value``."""

    kind: str
    start: int
    end: int
    value: str


@dataclass(frozen=True, slots=True)
class Redaction:
    """Redacted text, the spans replaced (offsets into the input) and occurrences per kind.

    ``placeholders[i]`` is what replaced ``spans[i]``. ``counts`` only has kinds that occurred.
    """

    text: str
    spans: list[PiiSpan]
    counts: dict[str, int]
    placeholders: list[str]


def placeholder(kind: str, number: int) -> str:
    """The token that stands for the ``number``-th distinct value of ``kind``."""
    return f"[{kind}_{number}]"


def _wordset(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


# A candidate: (start, end, kind). Offsets index the working text, which always has the input's length.
_Cand = tuple[int, int, str]

# Patterns start with the character they consume first and check what precedes it afterwards: the
# regex engine then skips straight to candidate characters instead of trying every offset, which
# is most of the throughput.
#
# Digit-based shapes: the first digit must not follow a word character or '+', nor be the tail of a
# decimal/date/range ('3.5551234567', '2024-555-...'); nothing word-like or numeric may follow.
_D0: Final = r"[0-9](?<![\w+][0-9])(?<![0-9][.,/\-][0-9])"
_NUM_LA: Final = r"(?!\w)(?![.,/\-][0-9])"

# --- emails and URL credentials ------------------------------------------------------------------

_EMAIL_LOCAL_CHARS: Final = frozenset(".%+-_'")
_EMAIL_MAX_LOCAL: Final = 128
# Host labels, then a top-level domain of letters (any script) or its punycode form ('xn--p1ai').
_EMAIL_DOMAIN: Final = r"(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+(?:xn--[A-Za-z0-9\-]{1,59}|[^\W\d_]{2,63})(?![\w\-])"
_EMAIL_RE: Final = re.compile(
    r"(?<![\w.%+\-])"
    # bounded, so a long run costs linear time, not quadratic; an apostrophe joins like a dot (o'brien)
    r"[\w%+\-]{1,64}(?:[.'][\w%+\-]{1,64}){0,15}"
    r"(?:@|%40)" + _EMAIL_DOMAIN
)
# A quoted local part ('"john doe"@example.com'), which the walk back from '@' cannot cross.
_QUOTED_EMAIL_RE: Final = re.compile(r'"[^"\n\\]{1,64}"(?:@|%40)' + _EMAIL_DOMAIN)
_AT_RE: Final = re.compile(r"@|%40")
_CREDENTIAL_RE: Final = re.compile(r"://([^\s/?#@\[\]:]+:[^\s/?#@\[\]]+)(?=@[^\s/?#@\[\]]+)")

# --- payment cards -------------------------------------------------------------------------------

# Groups joined by a space or a dash, or by a line break where a wrapped text split the number.
_LINE_BREAK: Final = r"[ \t]*\r?\n[ \t]*"
_DIGIT_RUN_RE: Final = re.compile(
    r"[0-9](?<!\w[0-9])(?<![0-9][.,][0-9])[0-9]*(?:(?:[ \-]|" + _LINE_BREAK + r")[0-9]+)*(?!\w)"
)
_GROUP_RE: Final = re.compile(r"[0-9]+")
_CARD_WORDS: Final = _wordset(
    "card cards cc pan visa mastercard amex maestro discover credit debit kreditkarte carte tarjeta"
)

# --- IBAN ----------------------------------------------------------------------------------------

_IBAN_LENGTHS: Final = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
# The two check digits, preceded by the country letters (checked in code, with the boundary).
_IBAN_CHECK_RE: Final = re.compile(r"[0-9](?<=[A-Za-z]{2}[0-9])[0-9](?=[ \-\n]?[A-Za-z0-9])")
_IBAN_SEPARATORS: Final = frozenset(" -\t\r\n")

# --- national ids --------------------------------------------------------------------------------

_SSN_RE: Final = re.compile(_D0 + r"[0-9]{2}([ \-])([0-9]{2})\1([0-9]{4})" + _NUM_LA)
_SSN_BARE_RE: Final = re.compile(_D0 + r"[0-9]{8}" + _NUM_LA)
_SSN_CONTEXT_RE: Final = re.compile(
    r"\b(?:ssn|social\s+security(?:\s+(?:number|no))?)\b(?:\s+(?:is|was))?\W{0,4}$", re.I
)
# UK NI digits and suffix; the two prefix letters (and an optional space) are checked in code.
_UK_NI_RE: Final = re.compile(r"[0-9](?<![0-9][0-9])[0-9] ?[0-9]{2} ?[0-9]{2} ?[A-Da-d](?!\w)")
_UK_NI_BAD_PREFIX: Final = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})
_ES_DNI_RE: Final = re.compile(r"[0-9](?<!\w[0-9])[0-9]{7}-?[A-Za-z](?!\w)")
_ES_NIE_RE: Final = re.compile(r"[XYZxyz](?<!\w[XYZxyz])-?[0-9]{7}-?[A-Za-z](?!\w)")
_ES_LETTERS: Final = "TRWAGMYFPDXBNJZSQVHLCKE"
# Codice fiscale from its year digits on; the six surname/name letters before are checked in code.
_IT_CF_RE: Final = re.compile(
    r"[0-9](?<=[A-Za-z]{6}[0-9])[0-9][ABCDEHLMPRSTabcdehlmprst][0-9LMNPQRSTUVlmnpqrstuv]{2}[A-Za-z]"
    r"[0-9LMNPQRSTUVlmnpqrstuv]{3}[A-Za-z](?!\w)"
)
# Values of characters in odd (1-based) positions; a digit weighs what the letter of its index does.
_IT_ODD_LETTERS: Final = (1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23)
_IT_ODD: Final = {
    **{str(i): _IT_ODD_LETTERS[i] for i in range(10)},
    **{chr(65 + i): v for i, v in enumerate(_IT_ODD_LETTERS)},
}

# --- IP addresses --------------------------------------------------------------------------------

# Shape only; octet ranges and leading zeros are checked in code.
_IPV4_RE: Final = re.compile(r"[0-9](?<![\w.][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?!\w)(?!\.[0-9])")
_IPV6_HINT_RE: Final = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6_RE: Final = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?"
    r"(?:%[0-9A-Za-z]+)?(?![\w:])"
)
_VERSION_CONTEXT_RE: Final = re.compile(
    r"(?:\b(?:v|ver|version|versions|build|release|rel|firmware|fw|sdk|patch|rev|revision)\.?\s*[:=#]?\s*"
    r"(?:is\s+)?"
    r"|\b(?:Chrome|Chromium|Firefox|Safari|Edge?|OPR|Opera|Version|AppleWebKit|CriOS|FxiOS|Gecko|Trident"
    r"|MSIE|SamsungBrowser|YaBrowser|Mobile)/)$",
    re.I,
)
_VERSION_WORDS: Final = (
    "v", "ver", "version", "versions", "build", "release", "rel", "firmware", "fw", "sdk", "patch", "rev", "revision"
)  # fmt: skip
_VERSION_BROWSERS: Final = (
    "Chrome", "Chromium", "Firefox", "Safari", "Edge?", "OPR", "Opera", "Version", "AppleWebKit", "CriOS", "FxiOS",
    "Gecko", "Trident", "MSIE", "SamsungBrowser", "YaBrowser", "Mobile",
)  # fmt: skip
# ``_VERSION_CONTEXT_RE`` read backwards: matched from the start of the reversed window, it tells in one
# anchored step what the ``$``-anchored search finds by trying every offset.
_VERSION_CONTEXT_REV_RE: Final = re.compile(
    r"(?:\s+si)?\s*[:=#]?\s*\.?(?:" + "|".join(w[::-1] for w in _VERSION_WORDS) + r")\b"
    r"|/(?:" + "|".join("e?gdE" if b == "Edge?" else b[::-1] for b in _VERSION_BROWSERS) + r")\b",
    re.I,
)
# Characters a version label can end with (``\s`` and ``\w`` are ``isspace``/``isalnum`` plus '_' in ``re``).
_VERSION_TAIL: Final = frozenset(":=#/._")
# --- phone numbers -------------------------------------------------------------------------------

# '+CC ...': country code, an optional '(0)', then up to seven groups, some maybe in parentheses.
_PHONE_INTL_RE: Final = re.compile(
    r"\+(?<![\w+]\+)[1-9][0-9]{0,3}(?:[ .\-]?\(0\))?"
    r"(?:(?:[ .\-/]|" + _LINE_BREAK + r")?(?:\([0-9]{1,5}\)|[0-9]{1,6}+)){1,7}" + _NUM_LA
)
_EXTENSION: Final = r"\s?(?:x|ext\.?|extension)\s?[0-9]{1,5}"
_EXT: Final = f"(?:{_EXTENSION})?"
_EXT_END_RE: Final = re.compile(_EXTENSION + "$")
_NANP_PAREN: Final = r"\([0-9]{3}\)[ .\-]?[0-9]{3}[ .\-]?"
_NANP_PLAIN: Final = r"[0-9]{3}[ .\-/][0-9]{3}[ .\-]"
_PHONE_NANP_RE: Final = re.compile(
    r"(?:\((?<![\w+]\()[0-9]{3}\)[ .\-]?[0-9]{3}[ .\-]?"  # (555) 123-4567
    r"|" + _D0 + r"(?:[0-9]{2}[ .\-/][0-9]{3}[ .\-]"  # 555-123-4567
    r"|(?<=1)[ .\-]?(?:" + _NANP_PAREN + "|" + _NANP_PLAIN + r")))"  # 1 (555) 123-4567, 1-555-123-4567
    r"[0-9]{4}" + _EXT + _NUM_LA
)
_PHONE_TRUNK_RE: Final = re.compile(
    r"(?:\((?<![\w+(]\()(?<![0-9][.,/\-]\()0[0-9]{1,4}\)|0(?<![\w+]0)(?<![0-9][.,/\-]0)[0-9]{1,4})"
    r"(?:[ .\-/]?[0-9]{2,8}+){1,5}" + _EXT + _NUM_LA
)
# Context-only shapes; not the tail of a longer spaced number ('code 555 123 4567' is one number).
_PHONE_LOCAL_RE: Final = re.compile(_D0 + r"(?<![0-9] [0-9])[0-9]{2}[ .\-][0-9]{4}" + _NUM_LA)
_PHONE_BARE_RE: Final = re.compile(_D0 + r"(?<![0-9] [0-9])(?:(?<=1)[2-9][0-9]{9}|(?<=[2-9])[0-9]{9})" + _NUM_LA)
_PHONE_GROUP_RE: Final = re.compile(r"\(0\)|\([0-9]+\)|[0-9]+")
_DATE_PREFIX_RE: Final = re.compile(r"[0-9]{1,2}([./\-])[0-9]{1,2}\1(?:[0-9]{4}|[0-9]{2}$)")
_PHONE_WORDS: Final = _wordset(
    "phone phones ph tel telephone mobile mob cell cellphone call called calling callback text txt sms whatsapp"
    " signal telegram fax reach contact ring dial number handy telefon telefono teléfono téléphone portable"
    " móvil celular numéro nummer rufnummer"
)
# Labels that, directly in front of a digit run, say it is *not* a phone number.
_NOT_PHONE_LABELS: Final = _wordset(
    "order orders ord invoice inv ref reference tracking track shipment parcel package ticket tkt case incident"
    " account acct acc customer cust client member membership user serial sku item product part model"
    " transaction txn confirmation conf booking reservation receipt po so id uid pid pin otp code batch lot"
    " version build request req job task iban bic swift routing sort vat tax ssn"
)
_LABEL_FILLERS: Final = frozenset({"", "no", "nr", "n°", "nº", "number", "num", "id", "code"})
_COPULAS: Final = frozenset({"is", "was", "are"})
_PUNCT: Final = "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum())
_LETTERS_RE: Final = re.compile(r"[^\W\d_]+")
_CONTEXT_CHARS: Final = 40

# Placeholders already present in the input (text redacted upstream): numbering continues after them.
_PLACEHOLDER_RE: Final = re.compile(r"\[(" + "|".join(KINDS) + r")_([1-9][0-9]{0,8})\]")
_HAS_DIGIT_RE: Final = re.compile(r"[0-9]")
# Detection re-runs while masking reveals new matches; real text settles in two or three passes. The cap
# only bounds the cost of adversarial input.
_MAX_PASSES: Final = 32


# --- validators ----------------------------------------------------------------------------------


def _luhn_ok(digits: str) -> bool:
    """Luhn mod-10: the check every issued card number passes and most typed ids do not."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_shape_ok(digits: str) -> bool:
    """Issuer prefix and length: keeps Luhn's 1-in-10 chance pass from turning ids into cards."""
    n = len(digits)
    if not 13 <= n <= 19:
        return False
    d1, d2, d4 = digits[0], int(digits[:2]), int(digits[:4])
    if d1 == "4":
        return n in (13, 16, 19)  # Visa
    if d2 in (34, 37):
        return n == 15  # Amex
    if 51 <= d2 <= 55 or 2221 <= d4 <= 2720:
        return n == 16  # Mastercard
    if 2200 <= d4 <= 2204:
        return n >= 16  # Mir
    if d1 == "3":
        return n >= 14  # Diners, JCB
    return d1 in "56"  # Maestro, Discover, UnionPay, RuPay


def _card_grouping_ok(sizes: list[int]) -> bool:
    """How cards are written: unbroken, in fours (the last group may be shorter), or Amex/Diners 4-6-5/4-6-4.

    '437171818303-1087' is a batch number even if its digits happen to pass Luhn.
    """
    if len(sizes) == 1 or sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(size == 4 for size in sizes[:-1]) and 1 <= sizes[-1] <= 4


def _iban_ok(compact: str) -> bool:
    """Country length and the ISO 13616 mod-97 check."""
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _ssn_ok(area: str, group: str, serial: str) -> bool:
    """Ranges the SSA never assigns."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _uk_ni_ok(prefix: str) -> bool:
    """HMRC issuing rules for the two prefix letters."""
    p = prefix.upper()
    return p[0] not in "DFIQUV" and p[1] not in "DFIOQUV" and p not in _UK_NI_BAD_PREFIX


def _es_id_ok(nie: str, number: str, letter: str) -> bool:
    """DNI/NIE check letter: number mod 23 into a fixed alphabet (NIE maps X/Y/Z to 0/1/2)."""
    if nie:
        if len(number) != 7:
            return False
        number = str("XYZ".index(nie.upper())) + number
    elif len(number) != 8:
        return False
    return _ES_LETTERS[int(number) % 23] == letter.upper()


def _it_cf_ok(code: str) -> bool:
    """Codice fiscale check character over the first 15 characters."""
    code = code.upper()
    total = 0
    for i, ch in enumerate(code[:15]):
        if i % 2 == 0:
            total += _IT_ODD[ch]
        else:
            total += int(ch) if ch.isdigit() else ord(ch) - 65
    return chr(65 + total % 26) == code[15]


# --- context -------------------------------------------------------------------------------------


def _before(text: str, start: int) -> str:
    """The words right before ``start``, not reaching past a line break or a placeholder.

    Stopping at ']' keeps decisions identical on masked and on redacted text, which is what makes
    redaction idempotent.
    """
    window = text[max(0, start - _CONTEXT_CHARS) : start]
    cut = max(window.rfind("]"), window.rfind("\n"), window.rfind("["))
    return window[cut + 1 :] if cut >= 0 else window


def _labelled_not_phone(text: str, start: int) -> bool:
    """'order 555-123-4567', 'invoice no. 0123 456 789', 'ref: 5551234567 ' (label, filler, copula)."""
    tokens = [t.strip(_PUNCT).lower() for t in _before(text, start).split()[-4:]]
    i = len(tokens) - 1
    if i >= 0 and tokens[i] in _COPULAS:
        i -= 1
    if i >= 0 and tokens[i] in _NOT_PHONE_LABELS:
        return True
    if i >= 0 and tokens[i] in _LABEL_FILLERS:
        i -= 1
    return i >= 0 and tokens[i] in _NOT_PHONE_LABELS


def _card_word_near(text: str, start: int) -> bool:
    """'card 41111 11111 111111': a card written in odd groups, said to be a card."""
    return any(w.lower() in _CARD_WORDS for w in _LETTERS_RE.findall(_before(text, start)))


def _phone_word_near(text: str, start: int) -> bool:
    return any(w.lower() in _PHONE_WORDS for w in _LETTERS_RE.findall(_before(text, start)))


# --- detectors: each yields candidates on the working text ---------------------------------------


def _is_word_char(text: str, i: int) -> bool:
    """Whether ``text[i]`` exists and is a word character, as the regexes' word boundaries see it."""
    return 0 <= i < len(text) and (text[i].isalnum() or text[i] == "_")


def _emails(text: str) -> Iterator[_Cand]:
    if "@" not in text and "%40" not in text:
        return
    if "://" in text:
        for m in _CREDENTIAL_RE.finditer(text):
            yield m.start(1), m.end(1), "CREDENTIAL"
    # Anchor on each '@': walk back over local-part characters (no further than a local part can be
    # long), then match the whole address there.
    last_end = 0
    for at in _AT_RE.finditer(text):
        start = at.start()
        if start > last_end and text[start - 1] == '"':
            opening = text.rfind('"', max(last_end, start - 66), start - 1)
            quoted = _QUOTED_EMAIL_RE.match(text, opening) if opening >= 0 else None
            if quoted is not None:
                last_end = quoted.end()
                yield quoted.start(), quoted.end(), "EMAIL"
                continue
        floor = max(last_end, start - _EMAIL_MAX_LOCAL)
        while start > floor and (text[start - 1].isalnum() or text[start - 1] in _EMAIL_LOCAL_CHARS):
            start -= 1
        while start < at.start() and text[start] in ".'":  # a quote opening the address is not part of it
            start += 1
        found = _EMAIL_RE.match(text, start)
        if found is not None and found.end() > at.start():
            last_end = found.end()
            yield found.start(), found.end(), "EMAIL"


def _cards(text: str) -> Iterator[_Cand]:
    for m in _DIGIT_RUN_RE.finditer(text):
        run = m.group()
        if len(run) < 13:
            continue
        groups = [(g.start(), g.end()) for g in _GROUP_RE.finditer(run)]
        # Digits from each group to the end of the run: no card starts where fewer than 13 are left.
        left = [0] * (len(groups) + 1)
        for k in range(len(groups) - 1, -1, -1):
            left[k] = left[k + 1] + groups[k][1] - groups[k][0]
        base = m.start()
        i = 0
        while i < len(groups) and left[i] >= 13:
            best = -1
            digits = ""
            for j in range(i, len(groups)):
                digits += run[groups[j][0] : groups[j][1]]
                if len(digits) > 19:
                    break
                if (
                    len(digits) >= 13
                    and _card_shape_ok(digits)
                    and _luhn_ok(digits)
                    and (
                        _card_grouping_ok([e - s for s, e in groups[i : j + 1]])
                        or _card_word_near(text, base + groups[i][0])
                    )
                ):
                    best = j
            if best >= 0:
                yield base + groups[i][0], base + groups[best][1], "CARD"
                i = best + 1
            else:
                i += 1


def _ibans(text: str) -> Iterator[_Cand]:
    for m in _IBAN_CHECK_RE.finditer(text):
        start = m.start() - 2
        if _is_word_char(text, start - 1):
            continue
        length = _IBAN_LENGTHS.get(text[start : start + 2].upper())
        if length is None:
            continue
        chars: list[str] = []
        pos = start
        end = len(text)
        while pos < end and len(chars) < length:
            ch = text[pos]
            if ch.isascii() and ch.isalnum():
                chars.append(ch.upper())
                pos += 1
            elif ch in _IBAN_SEPARATORS and chars:
                # one space or dash between groups, or a line break (with spaces) where the text wrapped
                gap = pos
                while gap < end and gap - pos < 4 and text[gap] in _IBAN_SEPARATORS:
                    gap += 1
                sep = text[pos:gap]
                ok_gap = sep in (" ", "-") or (sep.count("\n") == 1 and sep.strip(" \t\r") == "\n")
                if not ok_gap or gap >= end or not (text[gap].isascii() and text[gap].isalnum()):
                    break
                pos = gap
            else:
                break
        if len(chars) != length or _is_word_char(text, pos):
            continue
        if _iban_ok("".join(chars)):
            yield start, pos, "IBAN"


def _uk_ni_start(text: str, digits_at: int) -> int:
    """Offset of the NI number whose digits start at ``digits_at``, or -1 if the prefix is not valid."""
    j = digits_at - 1 if digits_at > 0 and text[digits_at - 1] == " " else digits_at
    prefix = text[max(0, j - 2) : j]
    if len(prefix) != 2 or not (prefix.isascii() and prefix.isalpha()) or _is_word_char(text, j - 3):
        return -1
    return j - 2 if _uk_ni_ok(prefix) else -1


def _national_ids(text: str) -> Iterator[_Cand]:
    if _HAS_DIGIT_RE.search(text) is None:
        return
    for m in _SSN_RE.finditer(text):
        if _ssn_ok(m.group()[:3], m.group(2), m.group(3)):
            yield m.start(), m.end(), "NATIONAL_ID"
    for m in _SSN_BARE_RE.finditer(text):
        d = m.group()
        if _ssn_ok(d[:3], d[3:5], d[5:]) and _SSN_CONTEXT_RE.search(_before(text, m.start())):
            yield m.start(), m.end(), "NATIONAL_ID"
    for m in _UK_NI_RE.finditer(text):
        start = _uk_ni_start(text, m.start())
        if start >= 0:
            yield start, m.end(), "NATIONAL_ID"
    for m in _ES_DNI_RE.finditer(text):
        if _es_id_ok("", m.group()[:8], m.group()[-1]):
            yield m.start(), m.end(), "NATIONAL_ID"
    for m in _ES_NIE_RE.finditer(text):
        digits = m.group().replace("-", "")
        if _es_id_ok(digits[0], digits[1:8], digits[-1]):
            yield m.start(), m.end(), "NATIONAL_ID"
    for m in _IT_CF_RE.finditer(text):
        start = m.start() - 6
        if (
            not _is_word_char(text, start - 1)
            and text[start : m.start()].isascii()
            and _it_cf_ok(text[start : m.end()])
        ):
            yield start, m.end(), "NATIONAL_ID"


def _ipv4_ok(value: str) -> bool:
    """Four octets 0-255 without leading zeros ('010.1.1.1' is more likely a date or a code)."""
    return all(int(octet) <= 255 and (len(octet) == 1 or octet[0] != "0") for octet in value.split("."))


def _version_labelled(text: str, start: int) -> bool:
    """``_VERSION_CONTEXT_RE.search(_before(text, start))``, cheaply.

    A label must end right before ``start`` on a space, ``:=#/.`` or a word character, and the reversed
    pattern on the uncut window finds every label the search finds (the cut only ever removes one): only a
    hit there pays for the exact check.
    """
    if start == 0:
        return False
    c = text[start - 1]
    if not (c.isspace() or c.isalnum() or c in _VERSION_TAIL):
        return False
    if _VERSION_CONTEXT_REV_RE.match(text[max(0, start - _CONTEXT_CHARS) : start][::-1]) is None:
        return False
    return _VERSION_CONTEXT_RE.search(_before(text, start)) is not None


def _ipv6_parts_ok(addr: str) -> bool:
    """What ``ipaddress`` needs before it parses: a '::', or eight groups (the last two may be a dotted quad).

    Times and dates ('2024:08:22:55') fail here without the cost of an exception.
    """
    if "::" in addr:
        return True
    colons = addr.count(":")
    return colons == 7 or (colons == 6 and "." in addr)


def _may_hold_ipv6(text: str) -> bool:
    """Every address passes ``_ipv6_parts_ok``, so a text with neither '::' nor six ':' holds none."""
    return "::" in text or text.count(":") >= 6


def _ips(text: str) -> Iterator[_Cand]:
    if "." in text:
        for m in _IPV4_RE.finditer(text):
            if not _ipv4_ok(m.group()) or _version_labelled(text, m.start()):
                continue
            yield m.start(), m.end(), "IP"
    if _may_hold_ipv6(text) and _IPV6_HINT_RE.search(text) is not None:
        for m in _IPV6_RE.finditer(text):
            cand = m.group()
            addr = cand.split("%", 1)[0]
            if not _ipv6_parts_ok(addr) or sum(ch in "0123456789abcdefABCDEF" for ch in addr) < 4:
                continue
            try:
                ipaddress.IPv6Address(addr)
            except ValueError:
                continue
            yield m.start(), m.end(), "IP"


def _trim_digits(cand: str, low: int, high: int, skip_trunk_zero: bool) -> int:
    """Length of the longest prefix of ``cand`` ending on a digit group with ``low..high`` digits; 0 if none.

    Lets an over-long match ('+44 20 7946 0958 4111 1111 ...') fall back to the phone it starts with.
    """
    count = 0
    best = 0
    for g in _PHONE_GROUP_RE.finditer(cand):
        if skip_trunk_zero and g.group() == "(0)":
            continue
        count += sum(ch.isdigit() for ch in g.group())
        if count > high:
            break
        if count >= low:
            best = g.end()
    return best


def _phones(text: str) -> Iterator[_Cand]:
    if _HAS_DIGIT_RE.search(text) is None:
        return
    if "+" in text:
        for m in _PHONE_INTL_RE.finditer(text):
            cand = m.group()
            wrapped = cand.find("\n")
            if wrapped >= 0 and _trim_digits(cand[:wrapped], 8, 15, skip_trunk_zero=True):
                cand = cand[:wrapped]  # complete before the line break: the next line is not part of it
            n = _trim_digits(cand, 8, 15, skip_trunk_zero=True)
            if n:
                yield m.start(), m.start() + n, "PHONE"
    for m in _PHONE_NANP_RE.finditer(text):
        if not _labelled_not_phone(text, m.start()):
            yield m.start(), m.end(), "PHONE"
    for m in _PHONE_TRUNK_RE.finditer(text):
        cand = m.group()
        if _DATE_PREFIX_RE.match(cand):
            continue
        intl = cand.startswith("00")
        ext = _EXT_END_RE.search(cand)  # the number's length is its own digits', not its extension's
        number = cand[: ext.start()] if ext is not None else cand
        n = _trim_digits(number, 10 if intl else 9, 15 if intl else 12, skip_trunk_zero=False)
        if not n:
            continue
        if n == len(number):
            n = len(cand)
        cand = cand[:n]
        formatted = not cand.isdigit()
        if _labelled_not_phone(text, m.start()):
            continue
        if formatted or _phone_word_near(text, m.start()):
            yield m.start(), m.start() + n, "PHONE"
    for rx in (_PHONE_LOCAL_RE, _PHONE_BARE_RE):
        for m in rx.finditer(text):
            if _phone_word_near(text, m.start()) and not _labelled_not_phone(text, m.start()):
                yield m.start(), m.end(), "PHONE"


_DETECTORS: Final[tuple[Callable[[str], Iterator[_Cand]], ...]] = (
    _emails,
    _ibans,
    _cards,
    _national_ids,
    _ips,
    _phones,
)


# --- resolution ----------------------------------------------------------------------------------


def _mask(text: str, spans: list[_Cand]) -> str:
    """Same-length text with each span replaced by '[' NUL... ']': nothing matches it, and its
    brackets look to the neighbours exactly like the placeholder that will replace it."""
    if not spans:
        return text
    parts: list[str] = []
    pos = 0
    for start, end, _ in sorted(spans):
        parts.append(text[pos:start])
        n = end - start
        parts.append("[" + "\0" * (n - 2) + "]" if n >= 2 else "\0")
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def _select(cands: list[_Cand], taken: bytearray) -> list[_Cand]:
    """Non-overlapping choice: stronger kind first, then the longer match, then the earlier one."""
    chosen: list[_Cand] = []
    for start, end, kind in sorted(cands, key=lambda c: (_RANK[c[2]], c[0] - c[1], c[0])):
        if end <= start or any(taken[start:end]):
            continue
        taken[start:end] = b"\1" * (end - start)
        chosen.append((start, end, kind))
    return chosen


def _literal_repeats(work: str, values: dict[str, str], taken: bytearray) -> list[_Cand]:
    """Every other occurrence of an already detected value, whatever its context."""
    found: list[_Cand] = []
    for value, kind in values.items():
        n = len(value)
        pos = work.find(value)
        while pos >= 0:
            if any(taken[pos : pos + n]):
                pos = work.find(value, pos + 1)
                continue
            taken[pos : pos + n] = b"\1" * n
            found.append((pos, pos + n, kind))
            pos = work.find(value, pos + n)
    return found


def find_pii(text: str) -> list[PiiSpan]:
    """All personal data in ``text``, non-overlapping and ordered by offset."""
    if len(text) < 3:
        return []
    taken = bytearray(len(text))
    spans: list[_Cand] = []
    values: dict[str, str] = {}
    work = text
    for _ in range(_MAX_PASSES):
        cands = [c for detect in _DETECTORS for c in detect(work)]
        new = _select(cands, taken)
        for start, end, kind in new:
            values.setdefault(text[start:end], kind)
        work = _mask(work, new)
        repeats = _literal_repeats(work, values, taken) if values else []
        work = _mask(work, repeats)
        new += repeats
        if not new:
            break
        spans.extend(new)
    spans.sort()
    return [PiiSpan(kind, start, end, text[start:end]) for start, end, kind in spans]


def _canonical_ipv4(value: str) -> bool:
    """Whether ``value`` is an IPv4 address written as ``ipaddress`` writes it (so it is its own normal form)."""
    parts = value.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not (p.isascii() and p.isdigit() and len(p) <= 3 and (len(p) == 1 or p[0] != "0") and int(p) <= 255):
            return False
    return True


def normalise(kind: str, value: str) -> str:
    """The identity of a value: two spellings of one value share a placeholder (and a pseudonym)."""
    if kind == "EMAIL":
        return value.replace("%40", "@").casefold()
    if kind in ("PHONE", "CARD"):
        return "".join(ch for ch in value if ch.isdigit())
    if kind in ("IBAN", "NATIONAL_ID"):
        return "".join(ch for ch in value if ch.isalnum()).upper()
    if kind == "IP":
        if _canonical_ipv4(value):
            return value
        try:
            return str(ipaddress.ip_address(value.split("%", 1)[0]))
        except ValueError:
            return value
    return value


def _with_repeats(text: str, spans: list[PiiSpan], values: dict[str, str]) -> list[PiiSpan]:
    """``spans`` plus every other literal occurrence in ``text`` of a value found in another field.

    Such an occurrence displaces weaker spans inside it: '05054 647548' alone looks like a phone, but not
    where the body showed '55899 05054 647548' to be a card.
    """
    out = list(spans)
    for value, kind in sorted(values.items(), key=lambda kv: (_RANK[kv[1]], -len(kv[0]))):
        pos = text.find(value)
        while pos >= 0:
            end = pos + len(value)
            inside = [s for s in out if s.start < end and pos < s.end]
            if all(s.start >= pos and s.end <= end and _RANK[s.kind] >= _RANK[kind] for s in inside) and not any(
                (s.start, s.end, s.kind) == (pos, end, kind) for s in inside
            ):
                out = [s for s in out if s not in inside]
                out.append(PiiSpan(kind, pos, end, value))
            pos = text.find(value, end)
    return sorted(out, key=lambda s: s.start)


def redact(text: str) -> Redaction:
    """Replace every span ``find_pii`` reports with its numbered placeholder."""
    return redact_all((text,))[0]


def redact_all(texts: Sequence[str]) -> list[Redaction]:
    """Redact several fields of one record with one numbering: a value is the same ``[KIND_N]`` in each.

    The subject and body of a ticket are numbered together, so ``[EMAIL_1]`` names one address wherever
    it appears in the record. Placeholders already present in any field are skipped over, as in ``redact``.
    """
    found = [find_pii(text) for text in texts]
    if not any(found):
        return [Redaction(text=text, spans=[], counts={}, placeholders=[]) for text in texts]
    if len(texts) > 1:  # a value known in one field is personal data in every field ('Urgent - 51881 ...')
        values = {span.value: span.kind for spans in found for span in spans}
        found = [_with_repeats(text, spans, values) for text, spans in zip(texts, found, strict=True)]
    return _numbered(texts, found)


def redact_spans(text: str, spans: list[PiiSpan]) -> Redaction:
    """``redact`` with the spans already found (``find_pii(text)``, or a path proven to give the same)."""
    if not spans:
        return Redaction(text=text, spans=[], counts={}, placeholders=[])
    return _numbered((text,), [spans])[0]


def _numbered(texts: Sequence[str], found: Sequence[list[PiiSpan]]) -> list[Redaction]:
    """Each text with its spans replaced by placeholders numbered once across ``texts``."""
    next_number: dict[str, int] = {}
    for text in texts:
        if "[" in text:
            for m in _PLACEHOLDER_RE.finditer(text):
                next_number[m.group(1)] = max(next_number.get(m.group(1), 0), int(m.group(2)))
    numbers: dict[tuple[str, str], int] = {}
    out: list[Redaction] = []
    for text, spans in zip(texts, found, strict=True):
        if not spans:
            out.append(Redaction(text=text, spans=[], counts={}, placeholders=[]))
            continue
        counts: dict[str, int] = {}
        placeholders: list[str] = []
        parts: list[str] = []
        pos = 0
        for span in spans:
            key = (span.kind, normalise(span.kind, span.value))
            number = numbers.get(key)
            if number is None:
                number = next_number.get(span.kind, 0) + 1
                next_number[span.kind] = number
                numbers[key] = number
            token = placeholder(span.kind, number)
            placeholders.append(token)
            counts[span.kind] = counts.get(span.kind, 0) + 1
            parts.append(text[pos : span.start])
            parts.append(token)
            pos = span.end
        parts.append(text[pos:])
        out.append(Redaction(text="".join(parts), spans=spans, counts=counts, placeholders=placeholders))
    return out


def mask_kinds(text: str, spans: list[PiiSpan]) -> str:
    """``text`` with each span (from ``find_pii(text)`` or ``redact(text).spans``) replaced by ``<KIND>``.

    Unnumbered on purpose: a template miner fed numbered placeholders sees ``[IP_1]`` and ``[IP_2]`` as
    different words and splits one template in two; kinds keep the value out and the template whole.
    """
    if not spans:
        return text
    parts: list[str] = []
    pos = 0
    for span in spans:
        parts.append(text[pos : span.start])
        parts.append(f"<{span.kind}>")
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)


# Every value a non-IP detector can report contains a match of this within itself (or, for a URL
# credential, with the '@' that follows it), shape by shape: emails and credentials an '@'; international
# phones '+' and eight digits; cards 13+ digits in single-separated groups; NANP phones 3-3-4 digits or
# '(555)' and three digits; bare phones and SSNs nine digits; trunk phones a '0' and nine digits; SSNs
# 3-2-4; DNI/NIE, UK NI, codice fiscale and IBAN their letter+digit heads (an IBAN's check digits may be
# followed by a dash, and its country letters follow no word character). A local phone (3+4 digits) needs
# a phone word near it: ``_LOCAL_PHONE_RE``, looked for only where ``_PHONE_WORD_RE`` finds one.
# Every branch opens on '@', '%', '+', '(' or a digit (letter heads are looked behind), so the search skips
# straight to those; the digit branches are factored by their next characters, so a digit that ends a
# number tries few of them. Property tests hold it to ``find_pii``.
_NON_IP_PII_RE: Final = re.compile(
    r"@|%40|\+[1-9](?:[ .\-/()]{0,3}\d){7,}|\(0(?:[ .\-/()]{0,2}\d){8,}|\(\d{3}\)[ .\-]?\d{3}"
    r"|0(?:[ .\-/()]{0,2}\d){8,}"
    r"|\d(?:\d(?:\d(?:[ .\-/]\d{3}[ .\-]\d{4}|\d{6}|[ \-]\d{2}[ \-]\d{4}|\d{5}-?[A-Za-z]))"
    r"|(?:[ \-]?\d){12,}"
    r"|(?<=[A-Za-z \-]\d)(?:(?<=[XYZxyz]\d)\d{6}|(?<=[XYZxyz]-\d)\d{6}"
    r"|(?<=[A-Za-z]{2}\d)\d ?\d{2} ?\d{2}|(?<=[A-Za-z]{2} \d)\d ?\d{2} ?\d{2}|(?<=[A-Za-z]{6}\d)\d"
    r"|(?<=[A-Za-z]{2}\d)(?<!\w[A-Za-z]{2}\d)\d[ \-]?[A-Za-z0-9]))"
)
_LOCAL_PHONE_RE: Final = re.compile(r"\d{3}[ .\-]\d{4}(?!\d)")
# Any phone word anywhere, in any case, also inside a longer word: ``_phone_word_near`` reads the words of a
# window that may cut one, so only a substring search finds every word it can find.
_PHONE_WORD_RE: Final = re.compile("|".join(sorted(map(re.escape, _PHONE_WORDS), key=len)), re.IGNORECASE)


def _shows_non_ip(work: str, text: str) -> bool:
    """Whether ``work`` (``text``, or a part of it, with addresses masked) may hold a value of another kind."""
    if _NON_IP_PII_RE.search(work) is not None:
        return True
    return _LOCAL_PHONE_RE.search(work) is not None and _PHONE_WORD_RE.search(text) is not None


def find_ips_only(text: str) -> list[PiiSpan] | None:
    """``find_pii(text)`` when its text can hold nothing but IPv4 addresses, else ``None`` (then ``find_pii``).

    The same passes as ``find_pii`` with the IP detector alone (an IPv6 address declines), checking once
    the addresses are masked that the working text shows no other kind (``_shows_non_ip``). A value of another
    kind either lies outside the addresses (and would show there), overlaps one as a phone (and loses to
    the address), or, for the kinds that outrank IP, reaches past the address with a match of its own;
    masking never creates a match. So the other detectors could find nothing, and the result is exactly
    ``find_pii``'s. Log lines are mostly of that kind (addresses, ports, counters), and this costs a
    fraction of the full search.
    """
    if len(text) < 3:
        return []
    if "\n" in text:
        return None  # a line break may join a value wrapped over two lines (cards, IBANs, phones)
    taken = bytearray(len(text))
    spans: list[_Cand] = []
    values: dict[str, str] = {}
    work = text
    ipv6 = _may_hold_ipv6(text)  # masking never adds a ':', so this holds for every pass
    for i in range(_MAX_PASSES):
        new = _select(list(_ips(work)), taken)
        if any(":" in text[start:end] for start, end, _ in new):
            return None  # IPv6 spans hold digits that higher-ranked kinds may share: the full search decides
        for start, end, kind in new:
            values.setdefault(text[start:end], kind)
        work = _mask(work, new)
        # Unchanged since the last pass's check: the same text, the same answer.
        if (new or i == 0) and _shows_non_ip(work, text):
            return None
        repeats = _literal_repeats(work, values, taken) if values else []
        work = _mask(work, repeats)
        if repeats and _shows_non_ip(work, text):
            return None
        new += repeats
        if not new:
            break
        spans.extend(new)
        if not repeats and not ipv6:
            # Masking a dotted quad the regex found reveals no other: the characters next to it are not word
            # characters, so no neighbour's lookaround or version label reads differently once it is masked.
            # Only a masked repeat (which may sit inside a longer token) or an IPv6 match could change the
            # next pass, which would find nothing new otherwise.
            break
    spans.sort()
    return [PiiSpan(kind, start, end, text[start:end]) for start, end, kind in spans]
