"""Deterministic demo traffic: support tickets and service log lines.

Demos, benchmarks and tests need realistic input without real customer data, and they need the same
input on every run, so everything here comes from one seeded ``random.Random`` and a fixed start time
(never the wall clock). The ticket phrasings are deliberately separate from the labelled training data in
``streamer/resources/data`` so that accuracy measured on demo traffic is not inflated by memorised text.
Only the standard library is used, so the generator runs anywhere the package is installed.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "STORY_BURST",
    "codename",
    "demo_log_lines",
    "demo_log_story",
    "demo_tickets",
    "first_seen_error",
    "valid_iban",
    "valid_luhn_card",
]

_START = datetime(2024, 6, 3, 8, 0, 0, tzinfo=timezone.utc)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

# --------------------------------------------------------------------------------------------------
# Valid-looking payment identifiers (PII detectors must be tested on numbers that pass their checksums)
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Slot values shared by tickets and logs
# --------------------------------------------------------------------------------------------------

_ITEMS = (
    "wireless headphones",
    "running shoes",
    "coffee grinder",
    "desk lamp",
    "winter jacket",
    "phone case",
    "backpack",
    "blender",
    "office chair",
    "smartwatch",
    "yoga mat",
    "set of pans",
    "rain boots",
    "monitor",
)
_PLANS = ("Starter", "Pro", "Business", "Team", "Growth", "Enterprise")
_FEATURES = (
    "an Excel export",
    "recurring invoices",
    "a calendar view",
    "bulk editing",
    "custom user roles",
    "a dark theme",
    "webhooks for refunds",
    "an offline mode",
    "Slack notifications",
    "login with security keys",
    "an audit log export",
    "shared saved filters",
)
_VERSIONS = (
    "iOS 17.2",
    "iOS 16.7",
    "Android 14",
    "Android 13",
    "Chrome 121",
    "Firefox 123",
    "Safari 17.3",
    "Edge 122",
    "the macOS app 5.4.1",
    "the Windows app 3.9.0",
    "web app v4.12.3",
    "iPadOS 17.1",
)
_CITIES = ("Leipzig", "Rotterdam", "Lyon", "Manchester", "Memphis", "Madrid", "Milan", "Warsaw", "Louisville")
_CARRIERS = ("DHL", "UPS", "FedEx", "DPD", "GLS", "Royal Mail", "USPS", "Hermes")
_INTEGRATIONS = ("Shopify", "Salesforce", "HubSpot", "Zapier", "Xero", "QuickBooks", "Zendesk", "Slack")
_AGENTS = ("Nadia", "Sam", "Yusuf", "Claire", "Bogdan", "Ines", "Kenji")
_FIRST = (
    "Anna",
    "Marco",
    "Priyanka",
    "Tom",
    "Fatima",
    "Jonas",
    "Li",
    "Olga",
    "Kwame",
    "Sofia",
    "Daniel",
    "Mei",
    "Lucas",
    "Aisha",
    "Pieter",
    "Emma",
    "Rafael",
    "Hannah",
    "Tariq",
    "Julia",
)
_LAST = (
    "Schmidt",
    "Rossi",
    "Okafor",
    "Nguyen",
    "Kowalski",
    "Garcia",
    "Jensen",
    "Haddad",
    "Moreau",
    "Brown",
    "Tanaka",
    "Silva",
    "Novak",
    "Murphy",
    "Fischer",
    "Ivanova",
)
_USERS = ("admin", "root", "deploy", "ubuntu", "test", "oracle", "git", "postgres", "jenkins", "support")
_PATHS = (
    "/api/v1/orders/{id}",
    "/api/v1/cart/{id}",
    "/api/v1/products?page={small}",
    "/api/v1/customers/{id}",
    "/checkout/confirm",
    "/static/js/app.{hex}.js",
    "/login",
    "/api/v1/search?q=shoes",
    "/healthz",
    "/api/v1/invoices/{id}/pdf",
)
_UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "okhttp/4.12.0",
    "python-requests/2.31.0",
    "kube-probe/1.29",
    "curl/8.5.0",
)
_DECLINES = ("insufficient_funds", "do_not_honor", "expired_card", "incorrect_cvc", "card_velocity_exceeded")
_TABLES = ("orders", "order_items", "customers", "invoices", "payments", "inventory", "sessions")


def _amount(rng: random.Random) -> str:
    return f"${rng.choice((9, 12, 19, 24, 29, 49, 79, 99, 149, 199, 249, 499))}.{rng.choice(('00', '99', '50', '95'))}"


def _ip(rng: random.Random) -> str:
    net = rng.choice(("10.{}.{}.{}", "192.0.2.{2}", "198.51.100.{2}", "203.0.113.{2}", "172.16.{1}.{2}"))
    return net.format(rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))


def _hex(rng: random.Random, k: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(k))


def _alnum(rng: random.Random, k: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(k))


def _phone(rng: random.Random) -> str:
    d = string.digits
    return rng.choice(
        (
            "+49 151 " + "".join(rng.choice(d) for _ in range(7)),
            "+44 7700 900" + "".join(rng.choice(d) for _ in range(3)),
            f"+1 202-555-01{rng.randint(0, 99):02d}",
            "+33 6 " + " ".join(f"{rng.randint(0, 99):02d}" for _ in range(4)),
            "0176 " + "".join(rng.choice(d) for _ in range(8)),
        )
    )


def _email(rng: random.Random) -> str:
    first, last = rng.choice(_FIRST).lower(), rng.choice(_LAST).lower()
    local = rng.choice((f"{first}.{last}", f"{first[0]}.{last}", f"{first}{rng.randint(70, 99)}", f"{last}.{first}"))
    return f"{local}@{rng.choice(('example.com', 'example.org', 'example.net', 'mail.example.com'))}"


def _path(rng: random.Random) -> str:
    return rng.choice(_PATHS).format(id=rng.randint(1000, 999999), small=rng.randint(1, 40), hex=_hex(rng, 8))


_GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "order": lambda r: f"ORD-{r.randint(100000, 999999)}",
    "invoice": lambda r: f"INV-{r.randint(10000, 99999)}",
    "amount": _amount,
    "amount2": _amount,
    "amt": lambda r: f"{r.randint(5, 400)}.{r.choice(('00', '49', '90', '99'))}",
    "eur": lambda r: f"{r.choice((19, 29, 39, 59, 89, 129))},{r.choice(('00', '90', '99'))} €",
    "code": lambda r: f"E{r.randint(100, 999)}",
    "version": lambda r: r.choice(_VERSIONS),
    "plan": lambda r: r.choice(_PLANS),
    "item": lambda r: r.choice(_ITEMS),
    "days": lambda r: str(r.randint(3, 19)),
    "n": lambda r: str(r.randint(2, 6)),
    "seats": lambda r: str(r.randint(4, 60)),
    "many": lambda r: str(r.choice((40, 85, 120, 300, 650, 1200))),
    "time": lambda r: f"{r.randint(5, 22):02d}:{r.choice(('00', '05', '12', '20', '34', '41', '55'))}",
    "city": lambda r: r.choice(_CITIES),
    "carrier": lambda r: r.choice(_CARRIERS),
    "feature": lambda r: r.choice(_FEATURES),
    "integration": lambda r: r.choice(_INTEGRATIONS),
    "agent": lambda r: r.choice(_AGENTS),
    "endpoint": lambda r: r.choice(("POST /v2/orders", "GET /v2/invoices", "GET /v2/customers", "POST /v2/refunds")),
    # log slots
    "ip": _ip,
    "port": lambda r: str(r.randint(1024, 65535)),
    "user": lambda r: r.choice(_USERS),
    "ms": lambda r: str(int(r.lognormvariate(3.5, 0.9)) + 1),
    "slow_ms": lambda r: str(r.randint(1200, 30000)),
    "pid": lambda r: str(r.randint(300, 65000)),
    "charge": lambda r: "ch_" + _alnum(r, 14),
    "cust": lambda r: f"C-{r.randint(10000, 99999)}",
    "trace": lambda r: _hex(r, 16),
    "path": _path,
    "bytes": lambda r: str(r.randint(120, 90000)),
    "ua": lambda r: r.choice(_UAS),
    "table": lambda r: r.choice(_TABLES),
    "decline": lambda r: r.choice(_DECLINES),
    "part": lambda r: str(r.randint(0, 11)),
    "count": lambda r: str(r.randint(10, 5000)),
    "pct": lambda r: str(r.randint(86, 99)),
    "conn": lambda r: str(r.randint(1000, 999999)),
    "key": lambda r: _hex(r, 10),
    "sha": lambda r: _alnum(r, 43),
    "line": lambda r: str(r.randint(30, 900)),
    "rss": lambda r: str(r.randint(2_000_000, 9_000_000)),
}


class _Slots(dict[str, str]):
    """Lazily filled template values: a value is drawn the first time a template asks for it, then reused,
    so the subject and the body of one ticket talk about the same order, plan or amount."""

    def __init__(self, rng: random.Random, now: datetime, fixed: dict[str, str] | None = None) -> None:
        super().__init__(fixed or {})
        self._rng = rng
        self._now = now

    def __missing__(self, key: str) -> str:
        rng = self._rng
        if key == "plan2":
            value = rng.choice([p for p in _PLANS if p != self["plan"]])
        elif key in ("date", "date2", "datum", "fecha"):
            day = (self._now - timedelta(days=rng.randint(2, 20))).date()
            value = {
                "date": f"{_MONTH_NAMES[day.month - 1]} {day.day}",
                "date2": f"{_MONTH_NAMES[day.month - 1]} {day.day}",
                "datum": f"{day.day:02d}.{day.month:02d}.",
                "fecha": f"{day.day}/{day.month:02d}",
            }[key]
        elif key == "amount2":
            value = _amount(rng)
            while value == self.get("amount"):
                value = _amount(rng)
        else:
            value = _GENERATORS[key](rng)
        self[key] = value
        return value


# --------------------------------------------------------------------------------------------------
# Tickets
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Intent:
    priority: str
    subjects: tuple[str, ...]
    problems: tuple[str, ...]


_INTENTS: dict[str, _Intent] = {
    "billing_charge_dispute": _Intent(
        "normal",
        (
            "Question about a charge",
            "Incorrect invoice {invoice}",
            "Double charge on my card",
            "Charge I don't recognise",
            "Billing error",
        ),
        (
            "I just checked my card statement and there are two payments of {amount} to you on {date}. "
            "I only bought one thing.",
            "Invoice {invoice} shows {amount} but the price we agreed was {amount2}. Could you send a corrected one?",
            "There's a {amount} debit from your company this morning and I honestly have no idea what it's for.",
            "My plan was moved down to {plan} last month, yet I was still billed the old rate of {amount}.",
            "The receipt for {order} lists a handling fee of {amount2} that wasn't shown at checkout.",
            "I cancelled on {date} and got a confirmation, but {amount} was taken again today.",
            "We're billed for {seats} seats on {invoice}, though only a handful of people actually use the account.",
            "On the phone I was promised the first month free. It wasn't: {amount} went out the same day.",
        ),
    ),
    "refund_request": _Intent(
        "normal",
        (
            "Refund request",
            "Money back for {order}",
            "Refund still missing",
            "Refund please",
        ),
        (
            "The {item} from order {order} stopped working after {days} days. I'd prefer my money back to a "
            "replacement.",
            "I sent back {order} on {date}; tracking shows you received it, but the {amount} hasn't reached my card.",
            "Could you refund the {amount} for last month? The service was unavailable for most of it.",
            "I accidentally bought the {plan} plan twice. Please reverse one of the two payments.",
            "Your colleague approved a refund of {amount} on {date}. When will I actually see it?",
            "The {item} doesn't do what the product page claims. I'd like to be reimbursed in full.",
            "I'm still inside the cooling-off period for {order}, so please pay me back.",
            "Please return the {amount2} delivery fee; the parcel came {days} days after the guaranteed date.",
        ),
    ),
    "cancel_subscription": _Intent(
        "normal",
        (
            "Cancellation",
            "Please cancel my plan",
            "Ending our subscription",
            "Stop auto-renew",
        ),
        (
            "Please end my {plan} subscription so that it doesn't renew on {date}.",
            "We no longer need the account, so please stop all future billing and shut it down.",
            "I've looked through the whole app for a way to cancel and can't find one. Could you do it for me?",
            "I'm moving to a different provider and want to terminate my membership.",
            "Kindly switch off auto-renewal on my account; I'll decide later whether to come back.",
            "My trial runs out in {days} days and I don't want it turning into a paid plan.",
            "The company is winding down, so please cancel every subscription linked to our organisation.",
        ),
    ),
    "change_plan": _Intent(
        "normal",
        (
            "Upgrade to {plan2}",
            "Changing our plan",
            "Add seats",
            "Downgrade request",
        ),
        (
            "We'd like to go from {plan} to {plan2}. Is the price prorated for the rest of the month?",
            "Can you add {seats} more seats to our account? The new hires start on Monday.",
            "I want to step down to {plan}; we aren't using most of the extras.",
            "Is it possible to switch to yearly billing now and just pay the difference?",
            "Which plan comes with {feature}? We need it and would upgrade today.",
            "Please bring our licences down to {seats}, several people have left the team.",
            "We hit the usage cap on {plan} every month. What would the next tier cost us?",
        ),
    ),
    "payment_failed": _Intent(
        "normal",
        (
            "Payment declined",
            "Can't pay invoice {invoice}",
            "Payment error {code}",
            "Card rejected",
        ),
        (
            "Checkout rejects my card with error {code}, but my bank says nothing was even attempted.",
            "I got an email that the {amount} renewal failed. I updated my card and it still fails.",
            "When I click pay, the 3-D Secure window never appears and the page eventually times out.",
            "PayPal sends me back to your site with 'payment not completed' every single time.",
            "I've tried two different cards on {version} and your checkout declines both.",
            "Our bank transfer for {invoice} came back. Can you confirm your account details?",
            "It says 'payment method invalid' when I try to settle the {amount} invoice.",
        ),
    ),
    "login_problem": _Intent(
        "normal",
        (
            "Can't sign in",
            "Sign-in fails on {version}",
            "Stuck at login",
            "2FA not working",
        ),
        (
            "Since this morning I can't get into my account on {version}. "
            "It says 'unable to sign in' with code {code}.",
            "The 'Continue with Google' button spins forever and never lets me in.",
            "I type my email and password, the page refreshes, and I'm back on the login form.",
            "My authenticator codes get rejected even though the clock on my phone is correct.",
            "The desktop app tells me my session has expired every few minutes.",
            "The verification text message never arrives, so I can't finish signing in.",
        ),
    ),
    "password_reset": _Intent(
        "normal",
        (
            "Password reset",
            "Reset link not working",
            "Password recovery",
            "Can't change password",
        ),
        (
            "I've forgotten my password and the recovery email hasn't turned up after {n} attempts.",
            "The link to choose a new password says it has expired the moment I open it.",
            "Every password I pick is refused as 'not meeting requirements', without saying which requirement.",
            "I need a new password, but the account is tied to an old work address I can't access any more.",
            "After changing my password, the app on {version} still won't accept it.",
            "Could you send me a fresh reset link? I used the last one by mistake.",
        ),
    ),
    "account_locked": _Intent(
        "normal",
        (
            "Account suspended",
            "Locked out",
            "Please unlock my account",
            "Account on hold",
        ),
        (
            "My account was suspended overnight and the email didn't say why.",
            "I mistyped my password a few times and now it says the account is locked for {n} hours.",
            "You blocked me for 'unusual activity' after I signed in from {city}. That was me, on holiday.",
            "Our only admin user is frozen, so nobody can manage people or billing.",
            "The account is restricted and I can't withdraw my balance of {amount}.",
            "I sent the verification documents on {date} and the account is still on hold.",
        ),
    ),
    "bug_report": _Intent(
        "normal",
        (
            "Bug: export crashes",
            "Error {code} on {version}",
            "Something is broken",
            "Wrong totals in report",
        ),
        (
            "On {version}, tapping Export closes the app straight away. Error {code} flashes just before.",
            "The monthly report doesn't add up: the rows sum to {amount} but the total line says {amount2}.",
            "Attachments vanish when I save a draft and open it again.",
            "Since updating to {version}, every notification shows up two or three times.",
            "Dates in the activity feed appear one day earlier than they really are.",
            "Dragging a card to another column throws error {code} and the card jumps back.",
            "Search results still include items that were deleted weeks ago.",
            "Any name with an apostrophe, like O'Brien, makes the customer form fail to save.",
        ),
    ),
    "feature_request": _Intent(
        "low",
        (
            "Feature suggestion",
            "Request: {feature}",
            "Idea for the product",
            "Would love this",
        ),
        (
            "It would save us a lot of time if {feature} were available.",
            "Are there plans to add {feature}? We'd use it daily.",
            "Suggestion from our team: {feature}. Right now we work around it with spreadsheets.",
            "I'd really like {feature} in the mobile app.",
            "Please consider {feature} for a future release, our auditors keep asking about it.",
        ),
    ),
    "order_status": _Intent(
        "normal",
        (
            "Where is {order}?",
            "Order status",
            "No dispatch email yet",
            "Tracking for {order}",
        ),
        (
            "Could you tell me where order {order} is? I placed it on {date}.",
            "The tracking for {order} shows 'label created' and nothing else.",
            "I haven't had a dispatch email for {order}. Is it still being packed?",
            "Order {order} is marked as delivered, but there's nothing at my door or with the neighbours.",
            "Is there an estimated delivery date for {order}? The page only says 'processing'.",
            "I paid {amount} for {order} but it doesn't appear in my order history.",
        ),
    ),
    "shipping_delay": _Intent(
        "normal",
        (
            "Late delivery",
            "{order} delayed",
            "Parcel stuck in transit",
            "Still waiting for my delivery",
        ),
        (
            "{order} was due on {date} and still hasn't arrived.",
            "The tracking for {order} hasn't moved from the {city} hub in {days} days.",
            "{carrier} has rescheduled my delivery yet again.",
            "I paid {amount2} for express shipping and the parcel is already {days} days late.",
            "Customs has been holding my parcel for {days} days and nobody tells me anything.",
            "The delivery estimate keeps slipping: first it was Monday, now it says sometime next week.",
        ),
    ),
    "return_item": _Intent(
        "normal",
        (
            "Return for {order}",
            "Exchange request",
            "Return label",
            "Sending an item back",
        ),
        (
            "I'd like to send back the {item} from {order}; it isn't what I expected.",
            "The {item} came in the wrong size. Can I exchange it?",
            "The return label for {order} is nowhere to be found in my account.",
            "The {item} was damaged in transit and I'd like to return it for a new one.",
            "Can I return something bought in the sale, or is that final?",
            "I dropped off the return for {order} on {date} but your site still doesn't show it.",
        ),
    ),
    "data_privacy_request": _Intent(
        "normal",
        (
            "GDPR request",
            "Data deletion",
            "Data access request",
            "Privacy question",
        ),
        (
            "Under the GDPR I'd like a full copy of the personal data you keep about me.",
            "Please permanently remove my account and every piece of personal information attached to it.",
            "I made a data access request on {date} and I'm still waiting for the export.",
            "Which sub-processors receive our customers' data? We need the list for our DPA.",
            "Please stop using my details for marketing and exclude me from any profiling.",
            "I'd like my old postal address corrected everywhere in your records.",
        ),
    ),
    "api_integration": _Intent(
        "normal",
        (
            "API error on {endpoint}",
            "{integration} integration broken",
            "Webhook question",
            "Rate limits",
        ),
        (
            "Calls to {endpoint} return 401 even though the key was generated today.",
            "Our webhook receiver gets each event two or three times. Is that expected?",
            "We get 429s from {endpoint} at only a few requests per second. What are the limits?",
            "The {integration} connector stopped syncing after your last release.",
            "{endpoint} answers 500 with error {code} whenever the payload contains non-ASCII characters.",
            "Is there a sandbox where we can try {endpoint} without creating real orders?",
        ),
    ),
    "praise_feedback": _Intent(
        "low",
        (
            "Thank you!",
            "Great service",
            "Kudos to your team",
            "Compliments",
        ),
        (
            "I just wanted to say thank you, the help I got last week was excellent.",
            "The new version on {version} is fantastic, everything feels snappier.",
            "{agent} sorted out my problem in minutes. Please pass on my thanks.",
            "Order {order} arrived early and beautifully packed. Really impressed.",
            "We've used you for a year now and the whole team is a fan.",
        ),
    ),
}

# Problems with wide impact: outages, money leaking, exposed data. These drive "urgent" priority.
_URGENT: dict[str, tuple[str, ...]] = {
    "login_problem": (
        "None of our {seats} employees can sign in since {time}; SSO returns error {code}. "
        "The whole company is at a standstill.",
    ),
    "payment_failed": (
        "Every checkout on our store has failed since {time} with {code}. We are losing sales every minute.",
    ),
    "bug_report": (
        "Since your release at {time} our users see other customers' data in the dashboard. "
        "That is a data leak, roll it back now.",
        "After this morning's update the app crashes on launch for all {many} of our field staff.",
    ),
    "billing_charge_dispute": (
        "You have charged our company card {amount} {n} times in the last hour and it is still going.",
    ),
    "account_locked": ("Our production account was suspended at {time} and every service we run on it is down.",),
    "api_integration": (
        "{endpoint} has answered 503 to every request since {time}. No orders are going through at all.",
    ),
    "shipping_delay": ("The medication in {order} was due yesterday and I run out tonight.",),
    "data_privacy_request": (
        "Personal data of our customers is reachable through a public link on your platform. Take it down immediately.",
    ),
}

_FOREIGN: tuple[tuple[str, str, str, str], ...] = (
    (
        "de",
        "shipping_delay",
        "Bestellung noch nicht da",
        "Hallo, meine Bestellung {order} ist seit {days} Tagen unterwegs und immer noch nicht angekommen. "
        "Können Sie bitte nachsehen? Danke",
    ),
    (
        "de",
        "billing_charge_dispute",
        "Doppelte Abbuchung",
        "Guten Tag, mir wurde am {datum} der Betrag von {eur} zweimal abgebucht. Bitte erstatten Sie eine "
        "der beiden Zahlungen. Mit freundlichen Grüßen",
    ),
    (
        "de",
        "cancel_subscription",
        "Kündigung",
        "Hiermit kündige ich mein Abo zum nächstmöglichen Termin. Bitte bestätigen Sie mir die Kündigung.",
    ),
    (
        "de",
        "password_reset",
        "Passwort vergessen",
        "Ich habe mein Passwort vergessen und die E-Mail zum Zurücksetzen kommt einfach nicht an.",
    ),
    (
        "es",
        "order_status",
        "¿Dónde está mi pedido?",
        "Hola, mi pedido {order} tenía que llegar el {fecha} y todavía no lo he recibido. ¿Me pueden decir dónde está?",
    ),
    (
        "es",
        "refund_request",
        "Reembolso pendiente",
        "Devolví el producto hace dos semanas y aún no he recibido el reembolso de {eur}. Gracias.",
    ),
    (
        "es",
        "login_problem",
        "No puedo iniciar sesión",
        "Desde ayer no puedo entrar en mi cuenta, siempre me sale el error {code}.",
    ),
    (
        "fr",
        "refund_request",
        "Remboursement",
        "Bonjour, j'ai renvoyé l'article de la commande {order} il y a dix jours et je n'ai toujours pas été "
        "remboursé. Pouvez-vous vérifier ? Merci",
    ),
    (
        "fr",
        "account_locked",
        "Compte bloqué",
        "Mon compte est bloqué depuis ce matin et je ne peux plus accéder à mes factures. Pouvez-vous m'aider ?",
    ),
    (
        "fr",
        "payment_failed",
        "Problème de paiement",
        "Ma carte est refusée à chaque tentative de paiement, alors qu'elle fonctionne partout ailleurs.",
    ),
)

_GREETINGS: dict[str, tuple[str, ...]] = {
    "email": ("Hi,", "Hello,", "Dear support team,", "Good morning,", "Hi there,", "To whom it may concern,", ""),
    "web": ("Hi,", "Hello,", "Hello support,", ""),
    "chat": ("hi,", "Hello!", "hey there,", "", "", ""),
    "phone": ("",),
    "api": ("",),
}
_CLOSINGS: dict[str, tuple[str, ...]] = {
    "email": ("Thanks,", "Kind regards,", "Best,", "Many thanks,", "Cheers,", "Thank you in advance,"),
    "web": ("Thanks.", "Thank you.", "Looking forward to your reply.", ""),
    "chat": ("thanks", "", "", "ty"),
    "phone": ("",),
    "api": ("",),
}
# Supporting details, each with the intents it makes sense for (a screenshot does not go with praise).
_TECH = frozenset({"bug_report", "login_problem", "password_reset", "payment_failed", "api_integration"})
_MONEY = frozenset({"billing_charge_dispute", "refund_request", "payment_failed"})
_PARCEL = frozenset({"order_status", "shipping_delay", "return_item", "refund_request"})
_ACCOUNT = frozenset({"cancel_subscription", "change_plan", "billing_charge_dispute", "data_privacy_request"})
_HELP = frozenset(_INTENTS) - {"praise_feedback", "feature_request"}
_DETAILS: tuple[tuple[str, Collection[str]], ...] = (
    ("I'm on {version}.", _TECH | {"account_locked"}),
    ("The error code was {code}.", _TECH - {"password_reset"}),
    ("My order number is {order}, in case it helps.", _PARCEL),
    ("The tracking page lists {carrier} as the courier.", _PARCEL - {"refund_request"}),
    ("The amount in question is {amount}.", _MONEY),
    ("This started around {time} today.", _TECH | {"account_locked"}),
    ("We're on the {plan} plan.", _ACCOUNT | {"api_integration", "bug_report"}),
    ("I already tried logging out and back in.", {"login_problem", "bug_report"}),
    ("I've cleared the cache and tried a second browser.", {"login_problem", "bug_report", "payment_failed"}),
    ("A screenshot is attached.", _TECH | _MONEY | {"account_locked"}),
    ("I contacted you about this on {date2} as well.", _HELP),
    ("Our account is registered under the company name.", _ACCOUNT | {"account_locked"}),
    ("We have {seats} people who'd use it.", {"feature_request", "change_plan"}),
    ("No rush, just wanted to share.", {"feature_request", "praise_feedback"}),
)
_DETAILS_FOR: dict[str, tuple[str, ...]] = {
    intent: tuple(text for text, intents in _DETAILS if intent in intents) for intent in _INTENTS
}
_ANGRY_OPEN = (
    "I'm honestly fed up.",
    "This is the third time I'm writing about this.",
    "Unbelievable.",
    "I have wasted enough time on this already.",
    "Seriously?",
)
_ANGRY_CLOSE = (
    "Fix it today or I'm taking my business elsewhere.",
    "I expect an answer within the hour.",
    "If this isn't resolved I'll dispute the charge with my bank.",
    "Don't send me another template reply.",
)
_JOINERS = (
    "Second issue:",
    "Something else:",
    "There's also another problem.",
    "One more thing.",
    "And while I'm at it:",
)
_PII_LINES: dict[str, tuple[str, ...]] = {
    "email": ("You can reach me at {email}.", "My login email is {email}, not the one I'm writing from."),
    "phone": ("Call me on {phone} if that's easier.", "My mobile number is {phone}."),
    "card": ("The card I paid with is {card}, expiry {expiry}.", "Card used: {card}."),
    "iban": ("Please send the money to my account, IBAN {iban}.", "Our bank details: IBAN {iban}."),
    "ip": ("My IP address is {ip} if you need to check your logs.", "We're calling the API from {ip}."),
}
# Which PII a customer would plausibly volunteer for a given problem.
_PII_FOR: dict[str, tuple[str, ...]] = {
    "billing_charge_dispute": ("card", "iban", "email", "phone"),
    "refund_request": ("iban", "card", "email", "phone"),
    "payment_failed": ("card", "iban", "email"),
    "api_integration": ("ip", "email"),
    "login_problem": ("ip", "email", "phone"),
    "account_locked": ("ip", "email", "phone"),
}
_TIERS = ("free", "pro", "business", "enterprise", "vip")
_TIER_WEIGHTS = (38, 30, 18, 11, 3)
_CHANNELS = ("email", "chat", "web", "phone", "api")
_CHANNEL_WEIGHTS = (38, 27, 22, 8, 5)
_PRIORITY_ORDER = ("low", "normal", "high", "urgent")
_BLOCKING = frozenset({"login_problem", "account_locked", "payment_failed"})


def _fields(template: str) -> set[str]:
    """Placeholders of a template, so a detail never repeats a value the problem already stated."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _bump(priority: str, steps: int = 1, cap: str = "urgent") -> str:
    i = min(_PRIORITY_ORDER.index(priority) + steps, _PRIORITY_ORDER.index(cap))
    return _PRIORITY_ORDER[i]


def _format_card(rng: random.Random, number: str) -> str:
    if rng.random() < 0.5:
        return number
    sep = rng.choice((" ", "-"))
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def _pii_line(rng: random.Random, kind: str) -> str:
    values = {
        "email": _email(rng),
        "phone": _phone(rng),
        "card": _format_card(rng, valid_luhn_card(rng)),
        "expiry": f"{rng.randint(1, 12):02d}/{rng.randint(25, 30)}",
        "iban": valid_iban(rng, rng.choice(("DE", "DE", "FR", "ES", "NL", "GB", "AT"))),
        "ip": _ip(rng),
    }
    return rng.choice(_PII_LINES[kind]).format_map(values)


def _join(channel: str, greeting: str, sentences: Sequence[str], closing: str, name: str) -> str:
    text = " ".join(s for s in sentences if s)
    if channel == "email":
        parts = [greeting, text, f"{closing}\n{name}" if closing else name]
        return "\n\n".join(p for p in parts if p)
    if channel == "phone":
        return f"[Call transcript] {text}"
    return " ".join(p for p in (greeting, text, closing) if p)


def _ticket(rng: random.Random, ticket_id: str, created: datetime, customer: dict[str, str]) -> dict[str, Any]:
    channel = rng.choices(_CHANNELS, _CHANNEL_WEIGHTS)[0]
    slots = _Slots(rng, created)
    roll = rng.random()
    language: str | None = rng.choice(("en", None))
    angry = False
    urgent = False
    multi = False
    pii: list[str] = []
    if roll < 0.03:
        language, intent, subject, body_tpl = rng.choice(_FOREIGN)
        intents = [intent]
        subject = subject.format_map(slots)
        body = body_tpl.format_map(slots)
        priority = _INTENTS[intent].priority
    else:
        if roll < 0.08:
            multi = True
            intents = rng.sample(sorted(_HELP), rng.choice((2, 2, 3)))
        elif roll < 0.115:
            urgent = angry = True
            intents = [rng.choice(sorted(_URGENT))]
        else:
            intents = [rng.choice(sorted(_INTENTS))]
            angry = intents[0] != "praise_feedback" and rng.random() < 0.07
        sentences: list[str] = []
        if angry:
            sentences.append(rng.choice(_ANGRY_OPEN))
        for k, intent in enumerate(intents):
            if k:
                sentences.append(rng.choice(_JOINERS))
            pool = _URGENT[intent] if urgent else _INTENTS[intent].problems
            sentences.append(rng.choice(pool).format_map(slots))
            if multi or rng.random() < 0.6:
                fresh = [d for d in _DETAILS_FOR[intent] if not _fields(d) & slots.keys()]
                if fresh:
                    sentences.append(rng.choice(fresh).format_map(slots))
        if urgent:
            subject = rng.choice(("URGENT: ", "Emergency - ", "CRITICAL: ")) + rng.choice(
                _INTENTS[intents[0]].subjects
            ).format_map(slots)
        else:
            subject = rng.choice(_INTENTS[intents[0]].subjects).format_map(slots)
            if multi:
                subject += rng.choice((" (and a few other things)", " + other issues", ""))
            if angry:
                subject = rng.choice((subject.upper(), "Still not fixed: " + subject, subject + "!!"))
        if rng.random() < 0.05:
            kind = rng.choice(_PII_FOR.get(intents[-1], ("email", "phone")))
            pii.append(kind)
            sentences.append(_pii_line(rng, kind))
        if angry:
            sentences.append(rng.choice(_ANGRY_CLOSE))
        greeting = rng.choice(_GREETINGS[channel])
        closing = "" if angry else rng.choice(_CLOSINGS[channel])
        name = rng.choice(_FIRST)
        body = _join(channel, greeting, sentences, closing, name)
        priority = max((_INTENTS[i].priority for i in intents), key=_PRIORITY_ORDER.index)
        if urgent:
            priority = "urgent"
    if not urgent and customer["tier"] in ("enterprise", "vip") and _BLOCKING.intersection(intents):
        priority = _bump(priority, cap="high")
    sentiment = "negative" if angry else ("positive" if intents == ["praise_feedback"] else "neutral")
    metadata: dict[str, Any] = {"source": "demo"}
    if channel == "chat":
        metadata["chat_session"] = f"CS-{_hex(rng, 8)}"
    elif channel == "web":
        metadata["form"] = rng.choice(("contact", "billing", "technical", "returns"))
    elif channel == "phone":
        metadata["call_seconds"] = rng.randint(40, 1500)
    elif channel == "api":
        metadata["integration"] = rng.choice(_INTEGRATIONS)
    # Ground truth for scoring the pipeline on demo traffic; a classifier must never read it.
    metadata["expected"] = {
        "intents": intents,
        "priority": priority,
        "sentiment": sentiment,
        "multi_issue": multi,
        "pii": pii,
    }
    ticket: dict[str, Any] = {
        "id": ticket_id,
        "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "channel": channel,
        "subject": subject,
        "body": body,
        "customer": dict(customer),
        "metadata": metadata,
    }
    if language is not None:
        ticket["language"] = language
    return ticket


def demo_tickets(n: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Yield ``n`` support tickets in the ingest contract, identical for identical ``(n, seed)``.

    Each ticket has ``id`` (unique ``TCK-…``), ``created_at`` (ISO-8601 UTC), ``channel``, ``subject``,
    ``body``, ``customer`` (``id``, ``tier``), optional ``language`` and ``metadata``. About 5% carry PII
    (email, phone, Luhn-valid card, mod-97-valid IBAN, IP), 5% raise two or three issues, 3% are German,
    Spanish or French, ~3% are angry outage-level reports. ``metadata["expected"]`` holds the intended
    labels so demo accuracy can be measured. The first k tickets do not depend on ``n``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    first_id = rng.randint(100000, 899999)
    customers: list[dict[str, str]] = []
    created = _START
    for i in range(n):
        created += timedelta(seconds=round(rng.expovariate(1 / 45), 3))
        if customers and rng.random() < 0.3:
            customer = rng.choice(customers)
        else:
            customer = {"id": f"C-{rng.randint(100000, 999999)}", "tier": rng.choices(_TIERS, _TIER_WEIGHTS)[0]}
            customers.append(customer)
        yield _ticket(rng, f"TCK-{first_id + i}", created, customer)


# --------------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LogTemplate:
    weight: float
    style: str  # json | iso | syslog | postgres | nginx_access | nginx_error
    service: str
    level: str
    text: str
    fields: tuple[str, ...] = ()


_ROUTINE: tuple[_LogTemplate, ...] = (
    _LogTemplate(30, "nginx_access", "nginx", "INFO", '{ip} - - [{clf}] "GET {path} HTTP/1.1" 200 {bytes} "-" "{ua}"'),
    _LogTemplate(
        6, "nginx_access", "nginx", "INFO", '{ip} - - [{clf}] "POST /api/v1/orders HTTP/1.1" 201 {bytes} "-" "{ua}"'
    ),
    _LogTemplate(3, "nginx_access", "nginx", "INFO", '{ip} - - [{clf}] "GET {path} HTTP/1.1" 404 {bytes} "-" "{ua}"'),
    _LogTemplate(0.6, "nginx_access", "nginx", "ERROR", '{ip} - - [{clf}] "GET {path} HTTP/1.1" 502 157 "-" "{ua}"'),
    _LogTemplate(14, "json", "checkout-api", "INFO", "Order {order} created for customer {cust}", ("order", "cust")),
    _LogTemplate(12, "json", "checkout-api", "INFO", "GET {path} completed in {ms} ms", ("ms",)),
    _LogTemplate(8, "json", "auth-service", "INFO", "User {user} signed in from {ip}", ("user",)),
    _LogTemplate(2, "json", "auth-service", "WARN", "Login failed for user {user}: bad credentials", ("user",)),
    _LogTemplate(0.6, "json", "auth-service", "WARN", "JWT validation failed: token expired for session {key}"),
    _LogTemplate(
        8, "json", "payments-worker", "INFO", "Charge {charge} succeeded amount={amt} currency=USD", ("charge",)
    ),
    _LogTemplate(
        1.5, "json", "payments-worker", "WARN", "Charge {charge} failed: card_declined ({decline})", ("charge",)
    ),
    _LogTemplate(0.4, "json", "payments-worker", "ERROR", "Refund for {charge} failed: charge already refunded"),
    _LogTemplate(
        6,
        "json",
        "orders-service",
        "INFO",
        "Published order.shipped for {order} to orders.v1 partition {part}",
        ("order",),
    ),
    _LogTemplate(5, "iso", "inventory-svc", "INFO", "Stock sync finished: {count} SKUs updated in {ms} ms"),
    _LogTemplate(1, "iso", "inventory-svc", "WARN", "Slow response from supplier API: {slow_ms} ms"),
    _LogTemplate(4, "iso", "notification-svc", "INFO", "Sent {count} emails in batch {key}"),
    _LogTemplate(0.5, "iso", "notification-svc", "ERROR", "Email to customer {cust} bounced: mailbox full"),
    _LogTemplate(
        3,
        "syslog",
        "sshd",
        "INFO",
        "sshd[{pid}]: Accepted publickey for deploy from {ip} port {port} ssh2: RSA SHA256:{sha}",
    ),
    _LogTemplate(2, "syslog", "sshd", "WARN", "sshd[{pid}]: Failed password for {user} from {ip} port {port} ssh2"),
    _LogTemplate(1, "syslog", "sshd", "WARN", "sshd[{pid}]: Invalid user {user} from {ip} port {port}"),
    _LogTemplate(2, "syslog", "systemd", "INFO", "systemd[1]: Started Session {part} of user deploy."),
    _LogTemplate(2, "syslog", "cron", "INFO", "CRON[{pid}]: (root) CMD (/usr/local/bin/rotate-exports --keep 7)"),
    _LogTemplate(
        0.3, "syslog", "systemd", "ERROR", "systemd[1]: billing-sync.service: Failed with result 'exit-code'."
    ),
    _LogTemplate(
        0.3,
        "syslog",
        "kubelet",
        "WARN",
        'kubelet[{pid}]: Readiness probe failed: HTTP probe failed with statuscode: 503 pod="checkout-api"',
    ),
    _LogTemplate(
        3,
        "postgres",
        "postgres",
        "LOG",
        "LOG:  duration: {slow_ms} ms  statement: SELECT * FROM {table} WHERE customer_id = $1",
    ),
    _LogTemplate(2, "postgres", "postgres", "LOG", "LOG:  checkpoint complete: wrote {count} buffers"),
    _LogTemplate(
        0.5, "postgres", "postgres", "ERROR", 'ERROR:  duplicate key value violates unique constraint "{table}_pkey"'
    ),
    _LogTemplate(
        0.3,
        "nginx_error",
        "nginx",
        "ERROR",
        "upstream timed out (110: Connection timed out) while reading response header from upstream, "
        'client: {ip}, server: shop.example.com, request: "GET {path} HTTP/1.1"',
    ),
)

# Seldom-seen messages: a template miner should treat these as new clusters.
_RARE: tuple[_LogTemplate, ...] = (
    _LogTemplate(
        0.15, "json", "checkout-api", "WARN", "Feature flag payload schema v{n} not recognised, using defaults"
    ),
    _LogTemplate(0.15, "json", "orders-service", "WARN", "Leader election lost for shard {part}, stepping down"),
    _LogTemplate(0.15, "iso", "gateway", "WARN", "TLS certificate for api.example.com expires in {days} days"),
    _LogTemplate(0.1, "syslog", "kernel", "ERROR", "kernel: EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0"),
    _LogTemplate(
        0.1,
        "syslog",
        "kernel",
        "ERROR",
        "kernel: Out of memory: Killed process {pid} (java) total-vm:{rss}kB, anon-rss:{rss}kB",
    ),
    _LogTemplate(
        0.1,
        "syslog",
        "smartd",
        "WARN",
        "smartd[{pid}]: Device: /dev/sdb [SAT], SMART Usage Attribute: 5 Reallocated_Sector_Ct changed",
    ),
    _LogTemplate(
        0.1, "json", "payments-worker", "ERROR", "Settlement file {key}.csv: {n} transactions could not be matched"
    ),
    _LogTemplate(
        0.1, "iso", "inventory-svc", "ERROR", "No space left on device while writing /var/cache/exports/{key}.tmp"
    ),
)

_BURSTS: tuple[tuple[_LogTemplate, tuple[str, ...]], ...] = (
    (
        _LogTemplate(
            1,
            "json",
            "checkout-api",
            "ERROR",
            "HikariPool-1 - Connection is not available, request timed out after 30000ms.",
        ),
        (),
    ),
    (
        _LogTemplate(
            1,
            "nginx_error",
            "nginx",
            "ERROR",
            "connect() failed (111: Connection refused) while connecting to upstream, client: {ip}, "
            'server: shop.example.com, request: "POST /checkout/confirm HTTP/1.1", '
            'upstream: "http://10.0.4.17:8080/checkout/confirm"',
        ),
        (),
    ),
    (
        _LogTemplate(
            1,
            "json",
            "payments-worker",
            "ERROR",
            "Payment gateway timeout after {slow_ms} ms for order {order}",
            ("order",),
        ),
        (),
    ),
    (
        _LogTemplate(1, "syslog", "sshd", "WARN", "sshd[{pid}]: Failed password for root from {ip} port {port} ssh2"),
        ("ip",),
    ),
    (
        _LogTemplate(
            1,
            "postgres",
            "postgres",
            "FATAL",
            "FATAL:  remaining connection slots are reserved for non-replication superuser connections",
        ),
        (),
    ),
)

_TRACES: tuple[tuple[str, str, str, tuple[str, ...], str | None], ...] = (
    (
        "checkout-api",
        "Failed to price cart for order {order}",
        'java.lang.NullPointerException: Cannot invoke "com.shop.pricing.Discount.apply(java.math.BigDecimal)" '
        'because "discount" is null',
        (
            "com.shop.pricing.PriceCalculator.total(PriceCalculator.java:{line})",
            "com.shop.checkout.CartService.price(CartService.java:{line})",
            "com.shop.checkout.CheckoutController.confirm(CheckoutController.java:{line})",
            "java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)",
        ),
        None,
    ),
    (
        "orders-service",
        "Could not persist order {order}",
        "org.springframework.dao.DataAccessResourceFailureException: Unable to acquire JDBC Connection",
        (
            "org.springframework.orm.jpa.vendor.HibernateJpaDialect.convertHibernateAccessException"
            "(HibernateJpaDialect.java:{line})",
            "com.shop.orders.OrderRepository.save(OrderRepository.java:{line})",
            "com.shop.orders.OrderService.place(OrderService.java:{line})",
        ),
        "java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available, "
        "request timed out after 30000ms.",
    ),
    (
        "payments-worker",
        "Capture failed for {charge}",
        "java.net.SocketTimeoutException: Read timed out",
        (
            "java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:{line})",
            "okhttp3.internal.http1.Http1ExchangeCodec.readResponseHeaders(Http1ExchangeCodec.java:{line})",
            "com.shop.payments.GatewayClient.capture(GatewayClient.java:{line})",
            "com.shop.payments.CaptureJob.run(CaptureJob.java:{line})",
        ),
        None,
    ),
)


_FIELD_NAMES = {"ms": "duration_ms", "cust": "customer_id", "user": "user"}


def _iso_ms(ts: datetime) -> str:
    return f"{ts:%Y-%m-%dT%H:%M:%S}.{ts.microsecond // 1000:03d}Z"


def _hosts(rng: random.Random) -> dict[str, tuple[str, ...]]:
    pods = {
        s: tuple(f"{s}-{_hex(rng, 9)}-{_alnum(rng, 5).lower()}" for _ in range(3))
        for s in ("checkout-api", "auth-service", "payments-worker", "orders-service")
    }
    return {
        **pods,
        "sshd": ("bastion-1", "bastion-2"),
        "systemd": ("app-1", "app-2", "app-3"),
        "cron": ("app-1", "app-2", "app-3"),
        "kernel": ("node-4", "node-7", "node-9"),
        "kubelet": ("node-4", "node-7", "node-9"),
        "smartd": ("db-1",),
    }


def _render(
    rng: random.Random, tpl: _LogTemplate, ts: datetime, slots: _Slots, hosts: dict[str, tuple[str, ...]]
) -> dict[str, Any] | str:
    slots["clf"] = f"{ts.day:02d}/{_MONTHS[ts.month - 1]}/{ts:%Y:%H:%M:%S} +0000"
    message = tpl.text.format_map(slots)
    if tpl.style == "json":
        record: dict[str, Any] = {
            "timestamp": _iso_ms(ts),
            "level": tpl.level,
            "service": tpl.service,
            "message": message,
            "host": rng.choice(hosts[tpl.service]),
            "trace_id": _hex(rng, 16),
        }
        for name in tpl.fields:
            value = slots[name]
            record[_FIELD_NAMES.get(name, f"{name}_id")] = int(value) if name == "ms" else value
        return record
    if tpl.style == "iso":
        return f"{_iso_ms(ts)} {tpl.level:<5} [{tpl.service}] {message}"
    if tpl.style == "syslog":
        host = rng.choice(hosts.get(tpl.service, ("app-1",)))
        return f"{_MONTHS[ts.month - 1]} {ts.day:>2} {ts:%H:%M:%S} {host} {message}"
    if tpl.style == "postgres":
        return f"{ts:%Y-%m-%d %H:%M:%S}.{ts.microsecond // 1000:03d} UTC [{slots['pid']}] {message}"
    if tpl.style == "nginx_error":
        return f"{ts:%Y/%m/%d %H:%M:%S} [error] {slots['pid']}#{slots['pid']}: *{slots['conn']} {message}"
    return message  # nginx_access carries its own timestamp


def _stack_trace(rng: random.Random, ts: datetime, hosts: dict[str, tuple[str, ...]]) -> dict[str, Any] | str:
    service, headline, exc, frames, cause = rng.choice(_TRACES)
    slots = _Slots(rng, ts)
    lines = [headline.format_map(slots), exc]
    lines += ["\tat " + f.format(line=rng.randint(30, 900)) for f in frames]
    if cause is not None:
        lines += ["Caused by: " + cause, "\tat com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:181)"]
    lines.append(f"\t... {rng.randint(12, 80)} more")
    text = "\n".join(lines)
    if rng.random() < 0.7:
        return {
            "timestamp": _iso_ms(ts),
            "level": "ERROR",
            "service": service,
            "message": text,
            "host": rng.choice(hosts[service]),
            "exception": exc.split(":", 1)[0],
        }
    return f"{_iso_ms(ts)} ERROR [{service}] {text}"


def _log_timeline(
    rng: random.Random, hosts: dict[str, tuple[str, ...]], n: int, start: datetime, mean_gap_ms: float
) -> Iterator[tuple[datetime, dict[str, Any] | str]]:
    """The entries of ``demo_log_lines`` with their timestamps (callers place more lines between them)."""
    templates = _ROUTINE + _RARE
    weights = [t.weight for t in templates]
    ts = start
    burst_left = 0
    burst: _LogTemplate | None = None
    burst_fixed: dict[str, str] = {}
    for _ in range(n):
        if burst is not None and burst_left > 0:
            ts += timedelta(milliseconds=rng.randint(3, 250))
            burst_left -= 1
            yield ts, _render(rng, burst, ts, _Slots(rng, ts, burst_fixed), hosts)
            continue
        ts += timedelta(milliseconds=int(rng.expovariate(1 / mean_gap_ms)) + 1)
        roll = rng.random()
        if roll < 0.008:
            burst, keep = rng.choice(_BURSTS)
            seed_slots = _Slots(rng, ts)
            burst_fixed = {k: seed_slots[k] for k in keep}
            burst_left = rng.randint(8, 25)
            burst_left -= 1
            yield ts, _render(rng, burst, ts, _Slots(rng, ts, burst_fixed), hosts)
        elif roll < 0.02:
            yield ts, _stack_trace(rng, ts, hosts)
        else:
            tpl = rng.choices(templates, weights)[0]
            yield ts, _render(rng, tpl, ts, _Slots(rng, ts), hosts)


def demo_log_lines(
    n: int, seed: int = 7, *, start: datetime | None = None, mean_gap_ms: float = 300.0
) -> Iterator[dict[str, Any] | str]:
    """Yield ``n`` log entries, identical for identical ``(n, seed)``: JSON-style records (dicts with
    ``timestamp``, ``level``, ``service``, ``message`` and extra fields) mixed with plain text lines
    (nginx, syslog, postgres, ISO-timestamp-plus-level). Mostly recurring templates with varying
    parameters, a few rare templates, multi-line Java stack traces as single entries, and occasional
    bursts of one error. Timestamps never go backwards. The first k entries do not depend on ``n``.

    ``start`` (default: a fixed day in 2024) is the time just before the first entry, ``mean_gap_ms``
    the mean gap between entries outside bursts.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    hosts = _hosts(rng)
    for _, entry in _log_timeline(rng, hosts, n, start or _START, mean_gap_ms):
        yield entry


#: The burst the story always has: one error template of one service, many times within seconds.
STORY_BURST = _BURSTS[2][0]
_SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")


def codename(tag: str) -> str:
    """A pronounceable, digit-free name for ``tag`` (``Kovamu``): a word, so log templates keep it."""
    rng = random.Random(f"codename:{tag}")
    return "".join(rng.choice(_SYLLABLES) for _ in range(3)).capitalize()


def first_seen_error(tag: str) -> str:
    """The message of the story's new error: its first word is ``codename(tag)``.

    A template's first token never generalises, so every tag gives a template no earlier run has
    seen, and a demo run on a broker that remembers earlier runs' templates still shows a first sighting.
    """
    return f"{codename(tag)} reconciliation aborted: settlement totals differ from the ledger"


def demo_log_story(
    n: int,
    *,
    start: datetime,
    tag: str,
    seed: int = 7,
    mean_gap_ms: float = 100.0,
    burst: int = 60,
) -> Iterator[dict[str, Any] | str]:
    """``demo_log_lines(n, seed, start=start, mean_gap_ms=mean_gap_ms)`` with three incidents placed in it.

    A third of the way in, a first-seen error template (``first_seen_error(tag)``, from
    ``payments-worker``); half-way, a burst of ``burst`` lines of ``STORY_BURST`` interleaved one by one
    with the next ``burst`` entries (so within seconds of event time); at seven tenths, a Java stack
    trace. These happen on every run, where the background's own incidents are left to chance.
    Timestamps never go backwards; ``n + burst + 2`` entries in all.
    """
    if n < 0 or burst < 0:
        raise ValueError(f"n and burst must be >= 0, got {n} and {burst}")
    rng = random.Random(seed)
    hosts = _hosts(rng)
    extra = random.Random(f"{seed}:{tag}")
    novel = _LogTemplate(1, "json", "payments-worker", "ERROR", first_seen_error(tag) + " by {amt} USD")
    burst_fixed: dict[str, str] = {}
    for i, (ts, entry) in enumerate(_log_timeline(rng, hosts, n, start, mean_gap_ms)):
        yield entry
        if i == n * 3 // 10:
            yield _render(extra, novel, ts, _Slots(extra, ts), hosts)
        if n // 2 <= i < n // 2 + burst:
            at = ts + timedelta(milliseconds=1)
            yield _render(extra, STORY_BURST, at, _Slots(extra, at, burst_fixed), hosts)
        if i == n * 7 // 10:
            yield _stack_trace(extra, ts, hosts)
