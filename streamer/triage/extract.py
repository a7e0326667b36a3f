"""Pull routing-relevant entities out of ticket and log text: ids, amounts, dates, URLs, versions, errors.

Extraction runs on the *redacted* text (see ``streamer.triage.pii``), so no entity can carry personal
data: an account number that is an IBAN shows up only as ``[IBAN_1]`` in ``Extraction.pii`` and never
in ``account_ids``; a URL with an email in its query string is reported with the placeholder in
place. All offsets index ``Extraction.text``, the redacted text.

Decisions:

* A bare ``#12345`` is a ticket id when written ``[#12345]`` as helpdesks do in subjects, or when the
  nearest ticket word (ticket, case, incident, request...) in its sentence is closer than the nearest
  order word (order, purchase, shipment, refund...); otherwise it is an order id, the id customers
  quote most.
* Keyword ids (``order 123-4567``, ``account no. 88123``) need at least three digits, so quantities
  ("order 2 more") are not ids.
* Amounts need a currency (symbol, ISO code or word). ``$`` is USD, ``¥`` JPY, ``dollars``/``bucks``
  USD, ``kr`` and bare ``pounds`` are too ambiguous and are skipped. The amount is a plain decimal
  string with the precision as written; a single ``,`` or ``.`` followed by exactly three digits is a
  thousands separator (``€1.234`` is 1234), otherwise a decimal one.
* Dates keep their text. ``iso`` is set only when the date is complete and unambiguous
  (``2024-03-12``, ``25/03/2024``, ``March 3, 2024``); ``12/03/2024`` could be either order and gets
  none. Relative dates (``yesterday``, ``last Monday``, ``2 days ago``) are never resolved: the core
  has no clock.
* Month names are English; the commonest relative words (gestern, ayer, ieri, aujourd'hui...) are
  also recognised.
* Where matches overlap, prefixed and keyword ids win over error codes, error codes over bare ``#1234``
  ids, then versions over dates and dates over amounts: ``error #1234`` is an error code,
  ``version 12.03.2024`` a version.
* Entities inside a URL are not reported separately, except ids (``/orders/ORD-12345``).
* Each list holds one entry per distinct value, in order of first appearance.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from streamer.triage.pii import KINDS, Redaction, redact

__all__ = [
    "Amount",
    "DateMention",
    "Entity",
    "ErrorCode",
    "Extraction",
    "PiiRef",
    "Version",
    "extract",
]


@dataclass(frozen=True, slots=True)
class Entity:
    """An id or URL: its text as written and the normal form used to compare and route on."""

    text: str
    value: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "value": self.value}


@dataclass(frozen=True, slots=True)
class Amount:
    """Money: ``amount`` is a plain decimal string (``"1234.50"``), ``currency`` an ISO 4217 code."""

    text: str
    amount: str
    currency: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "amount": self.amount, "currency": self.currency}


@dataclass(frozen=True, slots=True)
class DateMention:
    """A date as written; ``iso`` only for complete, unambiguous absolute dates."""

    text: str
    relative: bool
    iso: str | None
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "relative": self.relative, "iso": self.iso}


@dataclass(frozen=True, slots=True)
class Version:
    """A product/version mention; ``product`` is lower-cased, ``None`` when not named."""

    text: str
    product: str | None
    version: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "product": self.product, "version": self.version}


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """An error identifier. ``scheme``: http, hex, errno, symbolic, exception, alnum or numeric."""

    text: str
    code: str
    scheme: str
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "code": self.code, "scheme": self.scheme}


@dataclass(frozen=True, slots=True)
class PiiRef:
    """Where a placeholder sits in the redacted text; the value itself never enters an extraction."""

    kind: str
    placeholder: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Extraction:
    """Everything extracted from one text. ``to_dict`` is what goes into enriched records."""

    text: str
    pii: list[PiiRef]
    order_ids: list[Entity]
    account_ids: list[Entity]
    ticket_ids: list[Entity]
    amounts: list[Amount]
    dates: list[DateMention]
    urls: list[Entity]
    versions: list[Version]
    error_codes: list[ErrorCode]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, always the same keys; offsets and the text itself are left out."""
        seen: dict[str, str] = {}
        for ref in self.pii:
            seen.setdefault(ref.placeholder, ref.kind)
        return {
            "order_ids": [e.to_dict() for e in self.order_ids],
            "account_ids": [e.to_dict() for e in self.account_ids],
            "ticket_ids": [e.to_dict() for e in self.ticket_ids],
            "amounts": [a.to_dict() for a in self.amounts],
            "dates": [d.to_dict() for d in self.dates],
            "urls": [u.to_dict() for u in self.urls],
            "versions": [v.to_dict() for v in self.versions],
            "error_codes": [c.to_dict() for c in self.error_codes],
            "pii": [{"kind": kind, "placeholder": token} for token, kind in seen.items()],
        }


_HAS_DIGIT_RE: Final = re.compile(r"[0-9]")


def _words(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


# --- ids -----------------------------------------------------------------------------------------

# An id token after a keyword: letters, digits and dashes, at least three digits (checked in code).
_ID_TOKEN: Final = r"#?\s?([A-Za-z0-9](?:[A-Za-z0-9\-_]{0,30}[A-Za-z0-9])?)(?![\w\[]|[/.]\w)"  # noqa: S105
_LABEL_TAIL: Final = r"(?:\s*(?:(?:no|nr|num|number|id|ref|reference|code)\b\.?|n°|nº))?(?:\s+(?:is|was))?\s*[:#=]?\s*"


def _keyword_re(words: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + words + r")\b" + _LABEL_TAIL + _ID_TOKEN, re.I)


_ORDER_KEYWORD_RE: Final = _keyword_re(
    r"orders?|purchase|bestellung|bestellnummer|auftrag|auftragsnummer|commande|pedido|orden|ordine|bestelling"
    r"|encomenda"
)
_ACCOUNT_KEYWORD_RE: Final = _keyword_re(
    r"account|acct|acc|customer|client|member|membership|subscriber|subscription|contract|user"
    r"|kundennummer|kunden-?nr|kundenkonto|konto|compte|cuenta|cliente|conta"
)
_TICKET_KEYWORD_RE: Final = _keyword_re(
    r"tickets?|case|incident|support\s+request|service\s+request|request|ticketnummer|vorgang|caso|dossier"
)
# Upper-case prefixes only ('po 123' in running text is not a purchase order); '-', '_', '#' or one space.
_ORDER_PREFIX_RE: Final = re.compile(r"\b(?:ORD|ORDER|SO|PO)(?:[-_#]| #?)?([0-9]{3,}(?:-[0-9]+)*)\b")
_ACCOUNT_PREFIX_RE: Final = re.compile(r"\b(?:ACC|ACCT|CUST|CUS|CID|UID|USR|MEM|ACCOUNT)(?:[-_#]| #?)?([0-9]{3,})\b")
_TICKET_PREFIX_RE: Final = re.compile(
    r"\b(?:TCK|TKT|TICKET|CASE|INC|REQ|SR|RITM|CHG|PRB|SUP|CS)(?:[-_#]| #?)?([0-9]{3,})\b"
)
_YEAR_RE: Final = re.compile(r"(?:19|20)[0-9]{2}")
_HASH_ID_RE: Final = re.compile(r"(?<![\w#&])#([0-9]{3,12})\b")
_TICKET_WORD_RE: Final = re.compile(
    r"\b(?:tickets?|case|incident|issue|request|support|helpdesk|re|ref|reply|replied)\b", re.I
)
_ORDER_WORD_RE: Final = re.compile(
    r"\b(?:orders?|ordered|purchase|purchased|shipment|shipping|delivery|package|parcel|bought|refund)\b", re.I
)

# --- amounts -------------------------------------------------------------------------------------

_SYMBOLS: Final = {
    "US$": "USD", "CA$": "CAD", "C$": "CAD", "AU$": "AUD", "A$": "AUD", "NZ$": "NZD", "HK$": "HKD",
    "S$": "SGD", "R$": "BRL", "MX$": "MXN", "$": "USD", "€": "EUR", "£": "GBP", "CN¥": "CNY", "¥": "JPY",
    "₹": "INR", "₩": "KRW", "₽": "RUB", "₺": "TRY", "₪": "ILS", "₫": "VND", "₱": "PHP", "฿": "THB",
    "zł": "PLN", "Kč": "CZK",
}  # fmt: skip
_CODES: Final = _words(
    "USD EUR GBP JPY CNY RMB INR CAD AUD NZD CHF SEK NOK DKK PLN CZK HUF RON BGN ISK TRY RUB UAH BRL MXN ARS "
    "CLP COP PEN ZAR NGN KES EGP MAD AED SAR QAR KWD ILS SGD HKD TWD KRW THB MYR IDR PHP VND PKR BDT"
)
_LOWERCASE_CODES: Final = frozenset({"usd", "eur", "gbp", "cad", "aud", "chf", "inr", "jpy", "sek", "nok", "dkk"})
_WORDS: Final = {
    "dollar": "USD", "dollars": "USD", "buck": "USD", "bucks": "USD", "euro": "EUR", "euros": "EUR",
    "quid": "GBP", "pounds sterling": "GBP", "yen": "JPY", "rupee": "INR", "rupees": "INR",
    "yuan": "CNY", "rupias": "INR", "dólares": "USD", "dolares": "USD",
}  # fmt: skip
_MULTIPLIERS: Final = {
    "k": Decimal(1000), "thousand": Decimal(1000), "m": Decimal(10**6), "mn": Decimal(10**6),
    "million": Decimal(10**6), "bn": Decimal(10**9), "billion": Decimal(10**9),
}  # fmt: skip

_SYM_ALT: Final = "|".join(re.escape(s) for s in sorted(_SYMBOLS, key=len, reverse=True))
_CODE_ALT: Final = "|".join(sorted(_CODES | _LOWERCASE_CODES))
_WORD_ALT: Final = "|".join(re.escape(w) for w in sorted(_WORDS, key=len, reverse=True))
# Thousands groups: ',' '.' apostrophe or narrow/no-break space; the plain-space form only before a
# currency that follows the number ('12 500 €'), where it cannot be two numbers.
_NUM: Final = r"[0-9]{1,3}(?:[,.'\u00a0\u202f][0-9]{3})+(?:[.,][0-9]{1,2})?|[0-9]+(?:[.,][0-9]{1,2})?"
_NUM_SP: Final = r"[0-9]{1,3}(?:[,.'\u00a0\u202f ][0-9]{3})+(?:[.,][0-9]{1,2})?|[0-9]+(?:[.,][0-9]{1,2})?"
_MULT: Final = r"(?:\s?(k|K|mn|m|M|bn|thousand|million|billion)\b)?"
_AMOUNT_PREFIX_RE: Final = re.compile(
    r"(?<![\w$€£¥])(-)?(" + _SYM_ALT + r"|\b(?:" + _CODE_ALT + r")(?![A-Za-z]))\s?(-)?"
    r"(" + _NUM + r")(?![0-9]|[.,][0-9])" + _MULT
)
_AMOUNT_SUFFIX_RE: Final = re.compile(
    r"(?<![\w.,])(-)?(" + _NUM_SP + r")" + _MULT + r"\s?(" + _SYM_ALT + r"|(?:" + _CODE_ALT + "|" + _WORD_ALT + r")\b)",
    re.I,
)

# --- dates ---------------------------------------------------------------------------------------

_MONTHS: Final = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7, "august": 8,
    "september": 9, "october": 10, "november": 11, "december": 12, "jan": 1, "feb": 2, "mar": 3, "apr": 4,
    "jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
_MONTH_ALT: Final = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ISO_DATE_RE: Final = re.compile(
    r"[0-9](?<!\w[0-9])[0-9]{3}([-/])([01][0-9])\1([0-3][0-9])"
    r"(?:[T ][0-2][0-9]:[0-5][0-9](?::[0-5][0-9](?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?(?![\w])"
)
_NUMERIC_DATE_RE: Final = re.compile(
    r"[0-9](?<![\w.,/-][0-9])[0-9]?([./-])([0-9]{1,2})\1([0-9]{4}|[0-9]{2})(?![\w]|[./-][0-9])"
)
_MONTH_DAY_RE: Final = re.compile(
    r"\b(" + _MONTH_ALT + r")\.?\s+([0-9]{1,2})(?:st|nd|rd|th)?\b(?:,?\s+([0-9]{4})\b)?", re.I
)
_DAY_MONTH_RE: Final = re.compile(
    r"\b([0-9]{1,2})(?:st|nd|rd|th)?(?:\s+of)?\s+(" + _MONTH_ALT + r")\b\.?(?:,?\s+([0-9]{4})\b)?", re.I
)
_MONTH_YEAR_RE: Final = re.compile(r"\b(" + _MONTH_ALT + r")\.?\s+([0-9]{4})\b", re.I)
_WEEKDAY_RE: Final = re.compile(
    r"\b(?:(?:on|last|next|this|since|past)\s+)?(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b",
    re.I,
)
_NUMBER_WORDS: Final = (
    r"[0-9]+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|a\s+few|few|several|a\s+couple\s+of"
)
_RELATIVE_RE: Final = re.compile(
    r"\b(?:the\s+day\s+before\s+yesterday|day\s+before\s+yesterday|yesterday|today|tomorrow|tonight"
    r"|earlier\s+today|this\s+(?:morning|afternoon|evening|week|month|year|weekend)"
    r"|last\s+(?:night|week|month|year|weekend)|next\s+(?:week|month|year|weekend)"
    r"|(?:" + _NUMBER_WORDS + r")\s+(?:minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?)\s+ago"
    r"|gestern|vorgestern|heute|ayer|anteayer|hoy|ieri|oggi|aujourd'hui|avant-hier)\b",
    re.I,
)

# --- URLs ----------------------------------------------------------------------------------------

_PLACEHOLDER_RE: Final = re.compile(r"\[(" + "|".join(KINDS) + r")_[0-9]+\]")
_PLACEHOLDER_ALT: Final = r"\[(?:" + "|".join(KINDS) + r")_[0-9]+\]"
# Path characters, placeholders (also a redacted IPv6 literal '[[IP_1]]') and IPv6 literals.
_URL_CHAR: Final = (
    r"(?:[^\s<>\"'`{}|\\^\[\]]|" + _PLACEHOLDER_ALT + r"|\[" + _PLACEHOLDER_ALT + r"\]|\[[0-9A-Fa-f:.%]+\])"
)
_URL_RE: Final = re.compile(r"\b(?:(?:https?|ftp|wss?)://|www\.)" + _URL_CHAR + "+", re.I)
_URL_HOST_RE: Final = re.compile(r"^(?:[a-z]+://)?(?:[^\s/?#@]*@)?(\[\[[^\]]+\]\]|\[[^\]]+\]|[^\s/?#:\[\]]+)", re.I)
_URL_TRAILING: Final = ".,;:!?'\")]}>*"
_BRACKETS: Final = {")": "(", "]": "[", "}": "{", ">": "<"}

# --- versions ------------------------------------------------------------------------------------

_PRERELEASE: Final = r"(?:-(?:alpha|beta|rc|pre|preview|dev|snapshot)[.0-9]*)?"
_V_VERSION_RE: Final = re.compile(r"(?<![\w.])[vV]([0-9]+(?:\.[0-9]+){1,3}" + _PRERELEASE + r")(?![\w.]|-\w)")
_KEYWORD_VERSION_RE: Final = re.compile(
    r"\b(?:(app|application|firmware|fw|os|sdk|api|client|agent|plugin|extension|driver|bios|kernel|desktop"
    r"|mobile|web|android|ios|server)\s+)?(?:version|ver\.?|release|build)\s*[:#]?\s*[vV]?([0-9]+(?:\.[0-9]+){0,3}"
    + _PRERELEASE
    + r")(?![\w.]|-\w)",
    re.I,
)
_PRODUCTS: Final = (
    "iOS", "iPadOS", "macOS", "OS X", "watchOS", "tvOS", "visionOS", "Android", "Windows", "Windows Server",
    "Ubuntu", "Debian", "Fedora", "CentOS", "RHEL", "Linux", "Chrome", "Chromium", "Firefox", "Safari", "Edge",
    "Opera", "Python", "Java", "Node.js", "Node", "npm", "Docker", "Kubernetes", "Outlook", "Office", "Excel",
    "Teams", "Slack", "Zoom", "One UI", "MIUI", "HarmonyOS", "PHP", "Ruby", ".NET", "PostgreSQL", "Postgres",
    "MySQL", "Redis", "Kafka", "nginx", "Apache", "Tomcat", "Electron", "Xcode", "Gradle", "Kotlin", "Swift",
)  # fmt: skip
_PRODUCT_VERSION_RE: Final = re.compile(
    r"(?<![\w.])("
    + "|".join(re.escape(p) for p in sorted(_PRODUCTS, key=len, reverse=True))
    + r")(?:\s+version)?[ /]v?([0-9]+(?:\.[0-9]+){0,3}"
    + _PRERELEASE
    + r")(?![\w.]|-\w)"
)

# --- error codes ---------------------------------------------------------------------------------

_HTTP_REASONS: Final = (
    r"Bad Request|Unauthori[sz]ed|Payment Required|Forbidden|Not Found|Method Not Allowed|Not Acceptable"
    r"|Request Time-?out|Conflict|Gone|Payload Too Large|Unsupported Media Type|Unprocessable (?:Entity|Content)"
    r"|Too Many Requests|Internal Server Error|Not Implemented|Bad Gateway|Service Unavailable"
    r"|Gateway Time-?out"
)
_HTTP_RE: Final = re.compile(
    r"\bHTTP(?:/[0-9](?:\.[0-9])?)?\s*(?:status\s*)?(?:code\s*)?[:#]?\s*([1-5][0-9]{2})\b"
    r"|\bstatus(?:\s+code)?\s*[:=]?\s*([1-5][0-9]{2})\b"
    r"|\b([45][0-9]{2})\s+(?:" + _HTTP_REASONS + r")\b",
    re.I,
)
_HEX_RE: Final = re.compile(r"\b0x[0-9A-Fa-f]{4,8}\b")
_ERRNO_RE: Final = re.compile(
    r"\bE(?:CONNREFUSED|CONNRESET|CONNABORTED|TIMEDOUT|NOENT|ACCES|PERM|PIPE|NOTFOUND|ADDRINUSE|ADDRNOTAVAIL"
    r"|HOSTUNREACH|NETUNREACH|NETDOWN|NOSPC|NOMEM|AGAIN|EXIST|ISDIR|NOTDIR|MFILE|NFILE|INVAL|BADF|BUSY"
    r"|NOTEMPTY|ROFS|IO|PROTO|NOTCONN|ALREADY|INPROGRESS|DQUOT|OVERFLOW|NOSYS|NOTSUP|OPNOTSUPP|CANCELED"
    r"|SHUTDOWN|AI_AGAIN)\b"
)
_SYMBOLIC_RE: Final = re.compile(r"\b(?:NET::)?[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")
_SYMBOLIC_PREFIXES: Final = frozenset({"ERR", "ERROR", "E", "NS", "SSL", "TLS", "DNS", "STATUS", "WSA", "EC", "NET"})
_SYMBOLIC_WORDS: Final = _words(
    "ERR ERROR ERRORS FAIL FAILED FAILURE INVALID DENIED TIMEOUT TIMED REFUSED RESET EXCEEDED EXHAUSTED "
    "UNAVAILABLE FORBIDDEN UNAUTHORIZED UNAUTHENTICATED EXPIRED ABORTED UNREACHABLE CONFLICT MISSING "
    "VIOLATION UNKNOWN BAD UNABLE CANNOT CANT NOTFOUND CORRUPT CORRUPTED MISMATCH OVERFLOW UNSUPPORTED "
    "REJECTED INTERNAL PANIC FATAL CRASH LIMIT"
)
_EXCEPTION_RE: Final = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)*[A-Z][A-Za-z0-9]*(?:Exception|Error)\b")
_VENDOR_CODE_RE: Final = re.compile(
    r"\b(?:E-?[0-9]{3,5}|(?:ORA|PLS|TNS|AADSTS|ERR|ERROR|ERRNO|SQLSTATE)[-_ ]?[0-9]{3,8})\b"
)
_CONTEXT_CODE_RE: Final = re.compile(
    r"\b(?:(?:error|exit|return|fault|failure|stop|status|result)\s+(?:code|status)|errno|error\s+no\.?"
    r"|error\s+number)\s*[:=#]?\s*(-?[0-9]{1,10})\b"
    r"|\b(?:error|err|fehler|erreur)\s*[:#]?\s*(-?[0-9]{3,10})\b",
    re.I,
)


# --- word gates ----------------------------------------------------------------------------------

_WORD_RE: Final = re.compile(r"[^\W\d_]+")
_ORDER_TRIGGERS: Final = _words(
    "order orders purchase bestellung bestellnummer auftrag auftragsnummer commande pedido orden ordine bestelling"
    " encomenda"
)
_ACCOUNT_TRIGGERS: Final = _words(
    "account acct acc customer client member membership subscriber subscription contract user kundennummer kunden"
    " kundenkonto konto compte cuenta cliente conta"
)
_TICKET_TRIGGERS: Final = _words("ticket tickets case incident request ticketnummer vorgang caso dossier")
_ORDER_PREFIXES: Final = _words("ORD ORDER SO PO")
_ACCOUNT_PREFIXES: Final = _words("ACC ACCT CUST CUS CID UID USR MEM ACCOUNT")
_TICKET_PREFIXES: Final = _words("TCK TKT TICKET CASE INC REQ SR RITM CHG PRB SUP CS")
_VERSION_TRIGGERS: Final = _words("version ver release build")
_PRODUCT_TRIGGERS: Final = frozenset(_WORD_RE.findall(" ".join(_PRODUCTS).lower()))
_MONTH_TRIGGERS: Final = frozenset(_MONTHS)
_WEEKDAY_TRIGGERS: Final = _words("monday tuesday wednesday thursday friday saturday sunday")
_RELATIVE_TRIGGERS: Final = _words(
    "yesterday today tomorrow tonight earlier this last next ago gestern vorgestern heute ayer anteayer hoy ieri"
    " oggi aujourd avant"
)
_CURRENCY_TRIGGERS: Final = frozenset({c.lower() for c in _CODES} | _LOWERCASE_CODES | set(_WORDS) | {"pounds"})
_CURRENCY_CHARS_RE: Final = re.compile(r"[$€£¥₹₩₽₺₪₫₱฿]|zł|Kč")
_HTTP_TRIGGERS: Final = _words(
    "http status bad unauthorized unauthorised payment forbidden found allowed acceptable timeout conflict gone"
    " large unsupported unprocessable requests internal implemented gateway unavailable"
)
_ERROR_TRIGGERS: Final = _words("error exit return fault failure stop status result errno err fehler erreur")
_VENDOR_TRIGGERS: Final = _words("E ORA PLS TNS AADSTS ERR ERROR ERRNO SQLSTATE")


@dataclass(frozen=True, slots=True)
class _Words:
    """The text's words, computed once: set lookups decide which of the slower scans are worth running."""

    raw: frozenset[str]
    lower: frozenset[str]
    has_digit: bool


def _scan_words(text: str) -> _Words:
    raw = frozenset(_WORD_RE.findall(text))
    return _Words(raw, frozenset(w.lower() for w in raw), _HAS_DIGIT_RE.search(text) is not None)


# --- candidates ----------------------------------------------------------------------------------

# (start, end, list name, priority, payload); lower priority wins an overlap.
_Cand = tuple[int, int, str, int, Any]


def _digits(token: str) -> int:
    return sum(ch.isdigit() for ch in token)


def _id_value(token: str) -> str:
    return token.lstrip("#").upper()


def _keyword_ids(text: str, rx: re.Pattern[str], name: str) -> Iterator[_Cand]:
    for m in rx.finditer(text):
        token = m.group(1)
        if _digits(token) >= 3 and not _YEAR_RE.fullmatch(token) and not _ISO_DATE_RE.fullmatch(token):
            yield m.start(1), m.end(1), name, 1, Entity(token, _id_value(token), m.start(1), m.end(1))


def _prefixed_ids(text: str, rx: re.Pattern[str], name: str) -> Iterator[_Cand]:
    for m in rx.finditer(text):
        if " " in m.group() and _YEAR_RE.fullmatch(m.group(1)):
            continue  # 'SO 2024', 'PO 1999': a year in shouted text
        value = re.sub(r"[\s#]+", "-", m.group()).upper()
        yield m.start(), m.end(), name, 0, Entity(m.group(), value, m.start(), m.end())


def _hash_ids(text: str) -> Iterator[_Cand]:
    for m in _HASH_ID_RE.finditer(text):
        start = m.start()
        window = text[max(0, start - 40) : start]
        sentence = re.split(r"[.!?\n]\s", window)[-1]
        after = re.split(r"[.!?\n]", text[m.end() : m.end() + 40])[0]
        ticket = start > 0 and text[start - 1] == "["
        if not ticket:
            # The nearest ticket or order word in the same sentence, before or after, decides.
            t = _nearest(sentence, after, _TICKET_WORD_RE)
            o = _nearest(sentence, after, _ORDER_WORD_RE)
            ticket = t < o
        name = "ticket_ids" if ticket else "order_ids"
        yield start, m.end(), name, 3, Entity(m.group(), m.group(1), start, m.end())


def _nearest(before: str, after: str, rx: re.Pattern[str]) -> int:
    """Distance in characters from the id to the closest match of ``rx`` around it (large if none)."""
    best = 10**6
    for w in rx.finditer(before):
        best = min(best, len(before) - w.end())
    for w in rx.finditer(after):
        best = min(best, w.start())
    return best


def _ids(text: str, words: _Words) -> Iterator[_Cand]:
    if not words.has_digit:
        return
    if words.raw & _ORDER_PREFIXES:
        yield from _prefixed_ids(text, _ORDER_PREFIX_RE, "order_ids")
    if words.raw & _ACCOUNT_PREFIXES:
        yield from _prefixed_ids(text, _ACCOUNT_PREFIX_RE, "account_ids")
    if words.raw & _TICKET_PREFIXES:
        yield from _prefixed_ids(text, _TICKET_PREFIX_RE, "ticket_ids")
    if words.lower & _TICKET_TRIGGERS:
        yield from _keyword_ids(text, _TICKET_KEYWORD_RE, "ticket_ids")
    if words.lower & _ORDER_TRIGGERS:
        yield from _keyword_ids(text, _ORDER_KEYWORD_RE, "order_ids")
    if words.lower & _ACCOUNT_TRIGGERS:
        yield from _keyword_ids(text, _ACCOUNT_KEYWORD_RE, "account_ids")
    if "#" in text:
        yield from _hash_ids(text)


def _parse_number(raw: str) -> Decimal | None:
    """'1,234.50', '1.234,50', '12 500', "1'234.5" -> Decimal; see the module doc for the one ambiguity."""
    s = re.sub(r"[\u00a0\u202f' ]", "", raw)
    dot, comma = s.rfind("."), s.rfind(",")
    if dot >= 0 and comma >= 0:
        dec, grp = (".", ",") if dot > comma else (",", ".")
        s = s.replace(grp, "").replace(dec, ".")
    elif dot >= 0 or comma >= 0:
        sep = "." if dot >= 0 else ","
        parts = s.split(sep)
        s = s.replace(sep, "") if len(parts) > 2 or len(parts[-1]) == 3 else s.replace(sep, ".")
    try:
        return Decimal(s)
    except InvalidOperation:
        return None


def _amount(text: str, start: int, end: int, sign: bool, number: str, mult: str | None, cur: str) -> _Cand | None:
    value = _parse_number(number)
    if value is None:
        return None
    if mult:
        value = (value * _MULTIPLIERS[mult.lower()]).normalize()
        value = value.quantize(Decimal(1)) if value == value.to_integral() else value
    if sign:
        value = -value
    return start, end, "amounts", 6, Amount(text[start:end], format(value, "f"), cur, start, end)


def _currency(token: str) -> str | None:
    if token in _SYMBOLS:
        return _SYMBOLS[token]
    if token in _CODES:
        return "CNY" if token == "RMB" else token  # noqa: S105
    if token in _LOWERCASE_CODES:
        return token.upper()
    return _WORDS.get(token.lower())


def _amounts(text: str, words: _Words) -> Iterator[_Cand]:
    if not words.has_digit:
        return
    if not (words.lower & _CURRENCY_TRIGGERS) and _CURRENCY_CHARS_RE.search(text) is None:
        return
    for m in _AMOUNT_PREFIX_RE.finditer(text):
        cur = _currency(m.group(2))
        if cur is not None:
            c = _amount(text, m.start(), m.end(), bool(m.group(1) or m.group(3)), m.group(4), m.group(5), cur)
            if c is not None:
                yield c
    for m in _AMOUNT_SUFFIX_RE.finditer(text):
        cur = _currency(m.group(4))
        if cur is not None:
            c = _amount(text, m.start(), m.end(), bool(m.group(1)), m.group(2), m.group(3), cur)
            if c is not None:
                yield c


def _iso(year: int, month: int, day: int) -> str | None:
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def _date(text: str, start: int, end: int, relative: bool, iso: str | None) -> _Cand:
    return start, end, "dates", 5, DateMention(text[start:end], relative, iso, start, end)


def _month_ok(token: str) -> bool:
    """'may' in lower case is the verb far more often than the month."""
    return token.lower().rstrip(".") != "may" or token[0] == "M"


def _numeric_dates(text: str) -> Iterator[_Cand]:
    for m in _ISO_DATE_RE.finditer(text):
        iso = _iso(int(m.group()[:4]), int(m.group(2)), int(m.group(3)))
        if iso is not None:
            yield _date(text, m.start(), m.end(), False, iso)
    for m in _NUMERIC_DATE_RE.finditer(text):
        a, sep, b, y = int(text[m.start() : m.start(1)]), m.group(1), int(m.group(2)), m.group(3)
        if sep == "." and len(y) != 4:
            continue  # '1.2.24' is a version far more often than a date
        if not (1 <= a <= 31 and 1 <= b <= 31 and (a <= 12 or b <= 12)):
            continue
        iso = None
        if len(y) == 4 and (a > 12) != (b > 12):
            day, month = (a, b) if a > 12 else (b, a)
            iso = _iso(int(y), month, day)
        yield _date(text, m.start(), m.end(), False, iso)


def _month_dates(text: str) -> Iterator[_Cand]:
    for m in _MONTH_DAY_RE.finditer(text):
        if _month_ok(m.group(1)) and 1 <= int(m.group(2)) <= 31:
            year = m.group(3)
            iso = _iso(int(year), _MONTHS[m.group(1).lower()], int(m.group(2))) if year else None
            yield _date(text, m.start(), m.end(), False, iso)
    for m in _DAY_MONTH_RE.finditer(text):
        if _month_ok(m.group(2)) and 1 <= int(m.group(1)) <= 31:
            year = m.group(3)
            iso = _iso(int(year), _MONTHS[m.group(2).lower()], int(m.group(1))) if year else None
            yield _date(text, m.start(), m.end(), False, iso)
    for m in _MONTH_YEAR_RE.finditer(text):
        if _month_ok(m.group(1)):
            yield _date(text, m.start(), m.end(), False, None)


def _dates(text: str, words: _Words) -> Iterator[_Cand]:
    if words.has_digit:
        yield from _numeric_dates(text)
        if words.lower & _MONTH_TRIGGERS:
            yield from _month_dates(text)
    if words.lower & _WEEKDAY_TRIGGERS:
        for m in _WEEKDAY_RE.finditer(text):
            yield _date(text, m.start(), m.end(), True, None)
    if words.lower & _RELATIVE_TRIGGERS:
        for m in _RELATIVE_RE.finditer(text):
            yield _date(text, m.start(), m.end(), True, None)


def _versions(text: str, words: _Words) -> Iterator[_Cand]:
    if not words.has_digit:
        return
    if "v" in words.raw or "V" in words.raw:
        for m in _V_VERSION_RE.finditer(text):
            yield m.start(), m.end(), "versions", 4, Version(m.group(), None, m.group(1), m.start(), m.end())
    if words.lower & _VERSION_TRIGGERS:
        for m in _KEYWORD_VERSION_RE.finditer(text):
            product = m.group(1).lower() if m.group(1) else None
            yield m.start(), m.end(), "versions", 4, Version(m.group(), product, m.group(2), m.start(), m.end())
    if words.lower & _PRODUCT_TRIGGERS:
        for m in _PRODUCT_VERSION_RE.finditer(text):
            version = Version(m.group(), m.group(1).lower(), m.group(2), m.start(), m.end())
            yield m.start(), m.end(), "versions", 4, version


def _error(start: int, end: int, text: str, code: str, scheme: str) -> _Cand:
    return start, end, "error_codes", 2, ErrorCode(text[start:end], code, scheme, start, end)


def _error_codes(text: str, words: _Words) -> Iterator[_Cand]:
    if words.has_digit:
        if words.lower & _HTTP_TRIGGERS:
            for m in _HTTP_RE.finditer(text):
                code = m.group(1) or m.group(2) or m.group(3)
                yield _error(m.start(), m.end(), text, code, "http")
        if "0x" in text:
            for m in _HEX_RE.finditer(text):
                yield _error(m.start(), m.end(), text, "0x" + m.group()[2:].upper(), "hex")
        if words.raw & _VENDOR_TRIGGERS:
            for m in _VENDOR_CODE_RE.finditer(text):
                yield _error(m.start(), m.end(), text, re.sub(r"[ _]", "-", m.group()).upper(), "alnum")
        if words.lower & _ERROR_TRIGGERS:
            for m in _CONTEXT_CODE_RE.finditer(text):
                group = 1 if m.group(1) is not None else 2
                yield _error(m.start(group), m.end(group), text, m.group(group), "numeric")
    if any(w[0] == "E" and w.isupper() for w in words.raw):
        for m in _ERRNO_RE.finditer(text):
            yield _error(m.start(), m.end(), text, m.group(), "errno")
    if "_" in text:
        for m in _SYMBOLIC_RE.finditer(text):
            token = m.group()
            parts = token.removeprefix("NET::").split("_")
            if parts[0] in _SYMBOLIC_PREFIXES or any(p in _SYMBOLIC_WORDS for p in parts) or "NOT_FOUND" in token:
                yield _error(m.start(), m.end(), text, token, "symbolic")
    if "Exception" in text or "Error" in text:
        for m in _EXCEPTION_RE.finditer(text):
            yield _error(m.start(), m.end(), text, m.group(), "exception")


def _urls(text: str) -> list[Entity]:
    found: list[Entity] = []
    if "://" not in text and "www." not in text and "WWW." not in text:
        return found
    for m in _URL_RE.finditer(text):
        url = m.group()
        end = len(url)
        opened = {closer: url.count(opener) for closer, opener in _BRACKETS.items()}
        closed = {closer: url.count(closer) for closer in _BRACKETS}
        while end and url[end - 1] in _URL_TRAILING:
            last = url[end - 1]
            if last in _BRACKETS:
                if opened[last] >= closed[last]:
                    break  # balanced: 'https://en.wikipedia.org/wiki/Foo_(bar)'
                closed[last] -= 1
            end -= 1
        url = url[:end]
        host = _URL_HOST_RE.match(url)
        if len(url) < 8 or host is None:
            continue
        name = host.group(1)
        name = name[1:-1] if name.startswith("[[") else name
        found.append(Entity(url, name if name.startswith("[") else name.lower(), m.start(), m.start() + len(url)))
    return found


_EXTRACTORS: Final[tuple[Callable[[str, _Words], Iterator[_Cand]], ...]] = (
    _ids,
    _error_codes,
    _versions,
    _dates,
    _amounts,
)
_IDS: Final = frozenset({"order_ids", "account_ids", "ticket_ids"})


def extract(text: str, redaction: Redaction | None = None) -> Extraction:
    """Entities of ``text``, extracted after redaction. Pass ``redaction`` if ``redact(text)`` was
    already computed, to save the second pass."""
    red = redaction if redaction is not None else redact(text)
    clean = red.text
    refs = [PiiRef(m.group(1), m.group(), m.start(), m.end()) for m in _PLACEHOLDER_RE.finditer(clean)]
    blocked = bytearray(len(clean))
    for ref in refs:
        blocked[ref.start : ref.end] = b"\1" * (ref.end - ref.start)
    urls = _urls(clean)
    in_url = bytearray(len(clean))
    for u in urls:
        in_url[u.start : u.end] = b"\1" * (u.end - u.start)
    words = _scan_words(clean)
    cands = [c for ex in _EXTRACTORS for c in ex(clean, words)]
    cands.sort(key=lambda c: (c[3], c[0] - c[1], c[0]))
    lists: dict[str, list[Any]] = {
        "order_ids": [],
        "account_ids": [],
        "ticket_ids": [],
        "amounts": [],
        "dates": [],
        "versions": [],
        "error_codes": [],
    }
    chosen: list[_Cand] = []
    for cand in cands:
        start, end, name = cand[0], cand[1], cand[2]
        if any(blocked[start:end]) or (name not in _IDS and any(in_url[start:end])):
            continue
        blocked[start:end] = b"\1" * (end - start)
        chosen.append(cand)
    chosen.sort(key=lambda c: c[0])
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for _, _, name, _, entity in chosen:
        key = (name, _entity_key(entity))
        if key not in seen:
            seen.add(key)
            lists[name].append(entity)
    unique_urls: list[Entity] = []
    seen_urls: set[str] = set()
    for u in urls:
        if u.text not in seen_urls:
            seen_urls.add(u.text)
            unique_urls.append(u)
    return Extraction(
        text=clean,
        pii=refs,
        order_ids=lists["order_ids"],
        account_ids=lists["account_ids"],
        ticket_ids=lists["ticket_ids"],
        amounts=lists["amounts"],
        dates=lists["dates"],
        urls=unique_urls,
        versions=lists["versions"],
        error_codes=lists["error_codes"],
    )


def _entity_key(entity: Any) -> tuple[str, ...]:
    """What makes two mentions the same entity for de-duplication."""
    if isinstance(entity, Entity):
        return (entity.value,)
    if isinstance(entity, Amount):
        return (entity.amount, entity.currency)
    if isinstance(entity, DateMention):
        return (entity.text.lower(),)
    if isinstance(entity, Version):
        return (entity.product or "", entity.version)
    if isinstance(entity, ErrorCode):
        return (entity.scheme, entity.code)
    return (repr(entity),)
