"""Generate the demo dataset for `llmops prep`: customer-support tickets with a category and a reply.

    python data/raw/generate.py [--out-dir data/raw] [--seed 7] [--rows 2600] [--legacy-rows 500]

It writes two exports of the same (fictional) helpdesk:

* support_tickets.jsonl: the main export, one JSON object per line,
  {"id": "T000123", "message": ..., "category": ..., "reply": ...};
* support_tickets_legacy.csv: an older export with the columns id,message,category,reply.

The category (billing, shipping, returns, account, technical, cancellation) is what the demo model
learns to predict, so every category has its own message templates with clear, category-specific
vocabulary, and the six categories are balanced: a tiny model trained for a minute can learn it.

The data is demo data, but it carries what real exports carry, in known proportions, so that
`llmops prep` has real work to do: exact duplicates (a re-sent form), near duplicates (the same
message with a changed case, punctuation, spacing or one word), e-mail addresses and phone numbers
(all on reserved example domains and fictional number ranges), empty messages, rows missing the
category or holding a field of the wrong type, truncated JSON lines, unicode debris (non-breaking
and zero-width spaces, fullwidth letters, control characters), multi-line quoted CSV cells, and
legacy rows that repeat tickets of the main export. The counts are printed at the end.

The output is deterministic: the same arguments give byte-identical files. Files are written to a
temporary file first and then moved into place, so a reader never sees half a file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import string
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

CATEGORIES = ("account", "billing", "cancellation", "returns", "shipping", "technical")

TEMPLATES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for order {order}, please refund the duplicate payment.",
        "My invoice for {month} shows {amount} but my plan should cost less than that.",
        "Why was my credit card charged {amount} on {date}? I did not authorise this payment.",
        "The payment for order {order} failed, yet the money was still taken from my bank account.",
        "Could you send me a copy of the invoice for order {order}? I need it for my expenses.",
        "There is an unexplained service fee of {amount} on my latest invoice.",
        "The billing address on my last invoice is wrong, please correct it.",
        "I was billed for the premium tier after downgrading, so I was overcharged {amount}.",
        "How do I update the payment card you charge every month? My old card expired.",
        "You charged me a late payment fee even though I paid the invoice on {date}.",
        "My discount code was not applied to the payment and I was charged the full {amount}.",
        "Please explain the charge of {amount} on my card statement from {date}.",
        "I need a VAT receipt for the payment of {amount} I made on {date}.",
        "My card payment was declined twice although my bank says the funds are there.",
        "Please refund the {amount} processing fee that was added to my bill for order {order}.",
        "The amount on my invoice does not match the price I was quoted, I was charged {amount}.",
    ),
    "shipping": (
        "My package with the {product} has not arrived yet. Where is order {order}?",
        "The tracking number for order {order} has not updated in {days} days.",
        "{carrier} says my parcel was delivered on {date}, but nothing was at my door.",
        "Can you change the delivery address for order {order}? The package is still at the depot.",
        "The estimated delivery date keeps moving. When will my {product} actually arrive?",
        "My parcel is stuck in customs, what do I need to do so the courier can deliver it?",
        "The courier left my package at the wrong house, order {order}.",
        "Do you deliver on weekends? I need the {product} delivered before {date}.",
        "I paid for express shipping but the tracking shows standard delivery for order {order}.",
        "Only one box of order {order} was delivered, the second package is missing from the shipment.",
        "How long does shipping to {country} usually take for a {product}?",
        "The tracking page for my {product} says the address was incomplete and delivery failed.",
        "{carrier} tried to deliver my package while I was out, how do I rebook the delivery?",
        "Order {order} shows as dispatched on {date} but there is still no tracking information.",
        "The delivery driver marked my parcel as undeliverable. Can you resend order {order}?",
    ),
    "returns": (
        "I want to return the {apparel}, it is the wrong size.",
        "How do I exchange my {apparel} for a different colour?",
        "Please send me a return label for order {order}, I want to send the {product} back.",
        "The {product} is not what I expected, I would like to return it and get a replacement.",
        "Can I return an item that was on sale? It is the {product} from order {order}.",
        "The {apparel} does not fit, I want to exchange it for a larger size.",
        "What is your return policy for opened items like the {product}?",
        "The {apparel} in order {order} came in the wrong size, how do I exchange it?",
        "The drop-off shop refused to accept my return for the {product}, what should I do now?",
        "Is the return free, or do I have to pay to send the {product} back to you?",
        "I want to exchange the {product} I got as a gift for a different model.",
        "How many days do I have to return the {product}? I bought it on {date}.",
        "I sent the {apparel} back two weeks ago, has my return been processed yet?",
        "The {apparel} is too small, can I swap it for the next size up?",
        "Can I return just one item from order {order} and keep the rest of it?",
    ),
    "account": (
        "I forgot my password and the reset email never arrives in my inbox, I tried on {date} too.",
        "I cannot log in to my account, it says my username does not exist.",
        "Please change the email address on my account, I no longer use the old one.",
        "My account got locked after too many failed login attempts on my {device}.",
        "How do I turn on two-factor authentication for my account?",
        "I lost my {device} and cannot get the 2FA code to sign in.",
        "Someone logged in to my account from another country, I think my password was stolen.",
        "The verification link for my new account has expired, can you send another one?",
        "How can I change my username? My profile still shows my old name since {date}.",
        "The password reset page says my security answer is wrong, I have tried {days} times.",
        "I want to update the email on my profile but the confirmation code never comes.",
        "My login works on the website but the {device} sign-in says invalid credentials.",
        "Please remove the old phone from my account so I can set up 2FA again.",
        "How do I merge my two accounts that were created with different email addresses?",
        "I signed up with Google but now I want a normal password login for my account.",
    ),
    "technical": (
        "The app crashes every time I open it on my {device}.",
        "I get error code {code} when I try to load my dashboard.",
        "The website will not load on my {device}, it just shows a blank page.",
        "Notifications stopped working on my {device} after the latest app update.",
        "The {gadget} companion app cannot connect over Bluetooth on my {device}.",
        "Syncing between my {device} and the web app fails with error {code}.",
        "The app freezes on the loading screen and I have to force close it.",
        "Video playback in the app stutters and then the screen goes black on my {device}.",
        "After the firmware update my {gadget} will not turn on anymore.",
        "The search page returns an internal server error {code} every single time.",
        "Images in the app do not load, I only see grey boxes on my {device}.",
        "The app shows error {code} and closes whenever I upload a photo.",
        "The page keeps spinning and never loads, I already cleared the browser cache.",
        "Since version {version} the app drains my battery and runs very slowly on my {device}.",
        "My {gadget} keeps dropping the wifi connection and the app reports error {code}.",
    ),
    "cancellation": (
        "Please cancel my subscription, I no longer need it.",
        "I want to cancel order {order} before it ships.",
        "How do I close my plan? I cannot find the cancel option anywhere.",
        "Cancel my membership at the end of the current period please.",
        "I signed up for the free trial by mistake, please cancel it before it renews.",
        "Please stop my monthly box subscription starting in {month}, I want to cancel it.",
        "I want to end my contract early. What are the cancellation terms?",
        "Please turn off auto-renewal and cancel my annual plan.",
        "I ordered the {product} twice by accident, please cancel one of the two orders.",
        "Cancel my pre-order of the {product}, I changed my mind.",
        "I am moving abroad and need to close my plan and end the service.",
        "Please cancel my {plan} subscription and confirm that it will not renew.",
        "How can I cancel the {plan} plan I started on {date}?",
        "I would like to cancel my subscription today, the service is not worth it for me.",
        "Please close my plan at the end of {month} and cancel any future renewals.",
    ),
}

REPLIES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I've refunded the duplicate charge on order {order}; it will reach your card in 5 business days.",
        "I've sent a corrected invoice to the email address on your account.",
        "I've reviewed your billing and reversed the incorrect fee.",
        "Your payment method is updated and future charges will go to the new card.",
    ),
    "shipping": (
        "I've asked the courier to trace order {order} and will update you within 24 hours.",
        "Your package is on its way and the updated tracking link is in your inbox.",
        "I've opened a delivery investigation for order {order} with the carrier.",
        "I've arranged a new delivery and sent the details to your inbox.",
    ),
    "returns": (
        "I've emailed you a prepaid return label for order {order}.",
        "Your exchange is approved; send the item back and we'll ship the replacement right away.",
        "Your return has been received and the refund will arrive within 3-5 business days.",
        "You can return the item within 30 days using the label in your order confirmation.",
    ),
    "account": (
        "I've sent a new password reset link to the email on your account.",
        "Your account is unlocked, so please sign in again and set a new password.",
        "I've updated the details on your account as requested.",
        "I've reset two-factor authentication, so you can enrol your {device} at the next login.",
    ),
    "technical": (
        "Please update to the latest app version, which fixes the issue you describe.",
        "I've passed error {code} to our engineers and will follow up as soon as we have a fix.",
        "Clearing the app cache and restarting your {device} usually resolves this, so please try that.",
        "Our team is aware of this bug and a fix is rolling out this week.",
    ),
    "cancellation": (
        "Your subscription is cancelled and you won't be charged again.",
        "Order {order} has been cancelled before shipping.",
        "Auto-renewal is turned off, so your plan ends at the close of the current period.",
        "I've closed your plan and sent a cancellation confirmation to your inbox.",
    ),
}

OPENERS = ("", "", "", "", "", "Hi, ", "Hello, ", "Hi there, ", "Good morning, ", "Hey, ", "Hello team, ",
           "Hi, this is {name}. ")
CLOSERS = ("", "", "", "", "", " Thanks.", " Thank you!", " Thanks, {name}.", " Regards, {name}.",
           " Please help.", " Thanks in advance.", " Any update would be appreciated.", " This is urgent.")

NAMES = ("Ana", "Ben", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Inès", "Jonas", "Kemi", "Liam",
         "Maya", "Noah", "Olga", "Priya", "Quentin", "Rosa", "Sam", "Tomás", "Uma", "Victor", "Wei", "Zoë")
SURNAMES = ("Smith", "Garcia", "Nguyen", "Müller", "Rossi", "Okafor", "Tanaka", "Kowalski", "Silva", "Dubois",
            "Jensen", "Patel", "Brown", "Novak", "Cohen", "Lindqvist")
ASCII_FOLD = str.maketrans({"é": "e", "è": "e", "á": "a", "ü": "u", "ë": "e", "ö": "o"})
EMAIL_DOMAINS = ("example.com", "example.org", "mail.example.com", "example.net")
PRODUCTS = ("wireless earbuds", "standing desk", "coffee grinder", "phone case", "smart watch", "desk lamp",
            "hiking backpack", "electric kettle", "yoga mat", "27-inch monitor", "air fryer",
            "bluetooth speaker", "robot vacuum", "cast iron pan", "office chair", "travel mug")
APPAREL = ("winter jacket", "rain coat", "wool sweater", "linen shirt", "summer dress", "hoodie",
           "denim skirt", "pair of jeans", "pair of running shoes", "pair of hiking boots")
GADGETS = ("smart watch", "wireless earbuds", "bluetooth speaker", "robot vacuum", "fitness tracker",
           "smart thermostat", "video doorbell", "e-reader")
DEVICES = ("iPhone 14", "Pixel 8", "Galaxy S23", "iPad", "Windows laptop", "MacBook Air", "Chromebook",
           "Android tablet")
CARRIERS = ("UPS", "DHL", "FedEx", "USPS", "Royal Mail", "The courier")
COUNTRIES = ("Canada", "Germany", "Australia", "Ireland", "Japan", "Mexico", "Norway", "Spain")
PLANS = ("Basic", "Plus", "Premium", "Family", "Pro")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
CURRENCIES = ("$", "$", "€", "£")
HTTP_ERRORS = (403, 404, 500, 502, 503)

EMAIL_PHRASES = ("You can reach me at {email}.", "My contact is {email}.", "Please reply to {email}.",
                 "Contact me at {email} if you need more details.")
PHONE_PHRASES = ("You can call me on {phone}.", "My number is {phone}.", "Call me back at {phone} please.",
                 "Best to reach me by phone: {phone}.")
BOTH_PHRASES = ("Reach me at {email} or {phone}.", "Contact: {email}, {phone}.",
                "You can write to {email} or call {phone}.")

EMPTY_MESSAGES = ("", " ", "   ", "\t", "\n", " \n ")
NEAR_DUP_FILLERS = ("please", "really", "still", "just", "again")
CONTROL_CHARS = ("\x07", "\x1b", "\x0b")
MULTILINE_WRAPPERS = (
    'Re: "{message}"\n\nSent from my phone, sorry for typos',
    'Forwarded message:\n"{message}"\n-- {name}',
    '{message}\nP.S. my last ticket said "resolved", but it is not, sorry, I had to write again.',
)

# Share of rows with each kind of dirt, per export. Row kinds are disjoint: a row is clean, or carries
# personal data, or one defect; duplicates copy a clean or personal-data row (and its personal data).
MAIN_RATES: dict[str, float] = {
    "exact_duplicate": 0.03, "near_duplicate": 0.03, "cross_source_duplicate": 0.0,
    "email": 0.065, "phone": 0.045, "email_and_phone": 0.015,
    "empty_message": 0.01, "missing_category": 0.005, "wrong_type": 0.003, "unicode_debris": 0.002,
    "multiline_quoted": 0.0, "truncated_json": 0.003,
}
LEGACY_RATES: dict[str, float] = {
    "exact_duplicate": 0.03, "near_duplicate": 0.03, "cross_source_duplicate": 0.02,
    "email": 0.065, "phone": 0.045, "email_and_phone": 0.015,
    "empty_message": 0.006, "missing_category": 0.005, "wrong_type": 0.0, "unicode_debris": 0.0,
    "multiline_quoted": 0.012, "truncated_json": 0.0,
}
DUPLICATE_KINDS = ("exact_duplicate", "near_duplicate", "cross_source_duplicate")
PII_KINDS = ("email", "phone", "email_and_phone")
DEFECT_KINDS = ("empty_message", "missing_category", "wrong_type", "unicode_debris", "multiline_quoted")
MAX_BASE_WORDS = 28  # leaves room for a contact sentence within the 40-word limit

Record = dict[str, object]


@dataclass
class Row:
    record: Record
    kinds: tuple[str, ...] = ()


def fields_of(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def make_slots(rng: random.Random) -> dict[str, str]:
    month = rng.choice(MONTHS)
    day = rng.randint(1, 28)
    cents = rng.choice((0, 0, 49, 95, 99, rng.randint(1, 98)))
    iso_date = f"2025-{MONTHS.index(month) + 1:02d}-{day:02d}"
    return {
        "order": f"#{rng.randint(10000, 99999)}",
        "amount": f"{rng.choice(CURRENCIES)}{rng.randint(4, 480)}.{cents:02d}",
        "date": rng.choice((f"{month} {day}", iso_date, f"{day} {month}")),
        "month": month,
        "days": str(rng.randint(3, 12)),
        "product": rng.choice(PRODUCTS),
        "apparel": rng.choice(APPAREL),
        "gadget": rng.choice(GADGETS),
        "device": rng.choice(DEVICES),
        "carrier": rng.choice(CARRIERS),
        "country": rng.choice(COUNTRIES),
        "plan": rng.choice(PLANS),
        "code": rng.choice((f"E{rng.randint(100, 999)}", f"ERR-{rng.randint(1000, 9999)}",
                            f"0x{rng.randint(0x1000, 0xFFFF):04X}", str(rng.choice(HTTP_ERRORS)))),
        "version": f"{rng.randint(2, 6)}.{rng.randint(0, 19)}.{rng.randint(0, 9)}",
        "name": rng.choice(NAMES),
        "surname": rng.choice(SURNAMES),
    }


def compose_message(rng: random.Random, category: str, slots: dict[str, str]) -> tuple[str, str]:
    """A message (opener + template + closer, at most MAX_BASE_WORDS words) and the template used."""
    template = rng.choice(TEMPLATES[category])
    opener, closer = rng.choice(OPENERS), rng.choice(CLOSERS)
    body = template
    if opener.endswith(", ") and not template.startswith(("I ", "I'", "{")):
        body = template[0].lower() + template[1:]  # "Hi, my package ...", not "Hi, My package ..."
    for candidate in (opener + body + closer, template + closer, template):
        message = candidate.format(**slots)
        if len(message.split()) <= MAX_BASE_WORDS:
            break
    return message, template


def pick_reply(rng: random.Random, category: str, template: str, slots: dict[str, str]) -> str:
    """A reply whose slots (order number, error code, device) all appear in the message."""
    known = fields_of(template)
    options = [reply for reply in REPLIES[category] if fields_of(reply) <= known]
    return rng.choice(options).format(**slots)


def clean_record(rng: random.Random, category: str) -> Record:
    slots = make_slots(rng)
    message, template = compose_message(rng, category, slots)
    return {"message": message, "category": category, "reply": pick_reply(rng, category, template, slots)}


def balanced_categories(rng: random.Random, n: int) -> list[str]:
    categories = [CATEGORIES[i % len(CATEGORIES)] for i in range(n)]
    rng.shuffle(categories)
    return categories


def fake_email(rng: random.Random) -> str:
    first = rng.choice(NAMES).lower().translate(ASCII_FOLD)
    last = rng.choice(SURNAMES).lower().translate(ASCII_FOLD)
    local = rng.choice((f"{first}.{last}", f"{first}{last}{rng.randint(1, 99)}", f"{first[0]}.{last}",
                        f"{first}_{last}", f"{first}.{last}+orders"))
    return f"{local}@{rng.choice(EMAIL_DOMAINS)}"


def fake_phone(rng: random.Random) -> str:
    """A number from a range reserved for fiction (555-01xx in North America, 020 7946 0xxx in London)."""
    area = rng.choice(("415", "212", "646", "312"))
    tail, uk = f"01{rng.randint(0, 99):02d}", f"0{rng.randint(0, 999):03d}"
    return rng.choice((f"+1 {area}-555-{tail}", f"({area}) 555-{tail}", f"020 7946 {uk}", f"+44 20 7946 {uk}",
                       f"{area}.555.{tail}", f"+1 ({area}) 555-{tail}"))


def add_contact(rng: random.Random, message: str, kind: str) -> str:
    phrases = {"email": EMAIL_PHRASES, "phone": PHONE_PHRASES, "email_and_phone": BOTH_PHRASES}[kind]
    sentence = rng.choice(phrases).format(email=fake_email(rng), phone=fake_phone(rng))
    return f"{sentence} {message}" if rng.random() < 0.2 else f"{message} {sentence}"


def fullwidth(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


def unicode_debris(rng: random.Random, message: str, variant: int) -> str:
    """Characters a normaliser should clean: NBSP, zero-width space, fullwidth, control chars, BOM."""
    words = message.split(" ")
    at = rng.randrange(1, len(words))
    if variant == 0:
        return message.replace(" ", "\u00a0", 3)
    if variant == 1:
        word = words[at]
        words[at] = word[: len(word) // 2] + "\u200b" + word[len(word) // 2:]
        return " ".join(words[:1]) + " \u200b" + " ".join([""] + words[1:])
    if variant == 2:
        words[0] = fullwidth(words[0])
        return " ".join(words)
    if variant == 3:
        words[at] = rng.choice(CONTROL_CHARS) + words[at]
        return " ".join(words)
    return "\ufeff" + message.replace(" ", "\u00a0 ", 1) + "\u00ad"


def wrong_type(record: Record, variant: int) -> Record:
    message = str(record["message"])
    options: tuple[Record, ...] = (
        {**record, "message": 40213},
        {**record, "message": message.rstrip(".!?").split()[:6]},
        {**record, "message": {"text": message}},
        {**record, "message": None},
        {**record, "category": 3},
    )
    return options[variant % len(options)]


def multiline_quoted(rng: random.Random, message: str) -> str:
    return rng.choice(MULTILINE_WRAPPERS).format(message=message, name=rng.choice(NAMES))


def near_duplicate(rng: random.Random, message: str) -> str:
    """The same message with a small change: case, trailing punctuation, an extra space or one word."""
    edit = rng.randrange(4)
    if edit == 0:
        return message.lower()
    if edit == 1:
        stripped = message.rstrip(".!? ")
        endings = [end for end in ("", "!", "!!", "?", "...") if stripped + end != message]
        return stripped + rng.choice(endings)
    words = message.split(" ")
    at = rng.randrange(1, len(words))
    if edit == 2:
        words[at] = " " + words[at]
    else:
        words.insert(at, rng.choice(NEAR_DUP_FILLERS))
    return " ".join(words)


def apply_kind(rng: random.Random, record: Record, kind: str, variant: int) -> Record:
    message = str(record["message"])
    if kind in PII_KINDS:
        return {**record, "message": add_contact(rng, message, kind)}
    if kind == "empty_message":
        return {**record, "message": EMPTY_MESSAGES[variant % len(EMPTY_MESSAGES)]}
    if kind == "missing_category":
        return {key: value for key, value in record.items() if key != "category"}
    if kind == "wrong_type":
        return wrong_type(record, variant)
    if kind == "unicode_debris":
        return {**record, "message": unicode_debris(rng, message, variant % 5)}
    if kind == "multiline_quoted":
        return {**record, "message": multiline_quoted(rng, message)}
    raise ValueError(f"unknown row kind: {kind}")


def plan_counts(n: int, rates: dict[str, float]) -> dict[str, int]:
    return {kind: round(n * rate) for kind, rate in rates.items()}


def dedup_key(message: str) -> str:
    return " ".join(message.lower().split()).rstrip(".!?")


def unique_records(rng: random.Random, categories: list[str], taken: set[str]) -> list[Record]:
    """One clean record per category given, no two alike and none whose dedup_key is in `taken`:
    duplicates come only from the planned ones."""
    records: list[Record] = []
    seen = set(taken)
    for category in categories:
        record = clean_record(rng, category)
        while dedup_key(str(record["message"])) in seen:
            record = clean_record(rng, category)
        seen.add(dedup_key(str(record["message"])))
        records.append(record)
    return records


def base_rows(rng: random.Random, n: int, counts: dict[str, int], taken: set[str]) -> list[Row]:
    """n clean rows, balanced over the categories, then disjoint subsets given personal data or a defect."""
    rows = [Row(record) for record in unique_records(rng, balanced_categories(rng, n), taken)]
    order = list(range(n))
    rng.shuffle(order)
    start = 0
    for kind in PII_KINDS + DEFECT_KINDS:
        for variant, index in enumerate(order[start:start + counts[kind]]):
            rows[index] = Row(apply_kind(rng, rows[index].record, kind, variant), (kind,))
        start += counts[kind]
    return rows


def duplicate_row(rng: random.Random, source: Row, kind: str) -> Row:
    record = {key: value for key, value in source.record.items() if key != "id"}
    if kind == "near_duplicate":
        record["message"] = near_duplicate(rng, str(record["message"]))
    return Row(record, (kind, *source.kinds))


def with_duplicates(rng: random.Random, rows: list[Row], counts: dict[str, int],
                    others: list[Row]) -> list[Row]:
    """rows plus duplicates, each placed after its source; cross-source ones copy rows of `others`."""
    sources = [i for i, row in enumerate(rows) if set(row.kinds) <= set(PII_KINDS)]
    foreign = [row for row in others if set(row.kinds) <= set(PII_KINDS)]
    after: list[list[Row]] = [[] for _ in rows]
    for kind in DUPLICATE_KINDS:
        for _ in range(counts[kind]):
            if kind == "cross_source_duplicate":  # an exact copy of a row of the other export
                after[rng.randrange(len(rows))].append(duplicate_row(rng, rng.choice(foreign), kind))
                continue
            source = rng.choice(sources)
            after[rng.randint(source, len(rows) - 1)].append(duplicate_row(rng, rows[source], kind))
    return [row for index, base in enumerate(rows) for row in (base, *after[index])]


def build_rows(rng: random.Random, n: int, prefix: str, rates: dict[str, float],
               others: list[Row] | None = None) -> list[Row]:
    counts = plan_counts(n, rates)
    n_base = n - sum(counts[kind] for kind in DUPLICATE_KINDS)
    others = others or []
    messages = [row.record.get("message") for row in others]
    taken = {dedup_key(message) for message in messages if isinstance(message, str)}
    rows = with_duplicates(rng, base_rows(rng, n_base, counts, taken), counts, others)
    return [Row({"id": f"{prefix}{i:06d}", **row.record}, row.kinds) for i, row in enumerate(rows, start=1)]


def truncate_lines(rng: random.Random, rows: list[Row], count: int) -> set[int]:
    """Indices of the clean rows whose JSON line is cut off, as an interrupted export leaves it."""
    candidates = [i for i, row in enumerate(rows) if not row.kinds]
    return set(rng.sample(candidates, min(count, len(candidates))))


def to_jsonl(rng: random.Random, rows: list[Row], truncated: set[int]) -> str:
    lines = []
    for index, row in enumerate(rows):
        line = json.dumps(row.record, ensure_ascii=False)
        if index in truncated:
            line = line[: rng.randint(len(line) // 3, 2 * len(line) // 3)]
        lines.append(line)
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "message", "category", "reply"])
    for row in rows:
        writer.writerow([row.record.get(key, "") for key in ("id", "message", "category", "reply")])
    return buffer.getvalue()


def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the data files are meant to be readable by all
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summarise(name: str, rows: list[Row], extra: dict[str, int]) -> str:
    kinds = Counter(kind for row in rows for kind in row.kinds)
    kinds.update(extra)
    has_email = kinds["email"] + kinds["email_and_phone"]
    has_phone = kinds["phone"] + kinds["email_and_phone"]
    categories = Counter(str(row.record["category"]) for row in rows if "category" in row.record)
    lines = [f"{name}: {len(rows)} rows",
             f"  categories: {dict(sorted(categories.items()))}",
             f"  with email: {has_email}, with phone: {has_phone} (both: {kinds['email_and_phone']})"]
    lines += [f"  {kind}: {kinds[kind]}" for kind in (*DUPLICATE_KINDS, *DEFECT_KINDS, "truncated_json")
              if kinds[kind]]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("data/raw"), help="where to write the files")
    parser.add_argument("--seed", type=int, default=7, help="random seed (same seed, same bytes)")
    parser.add_argument("--rows", type=int, default=2600, help="rows in support_tickets.jsonl")
    parser.add_argument("--legacy-rows", type=int, default=500, help="rows in support_tickets_legacy.csv")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    rng = random.Random(args.seed)
    main_rows = build_rows(rng, args.rows, "T", MAIN_RATES)
    truncated = truncate_lines(rng, main_rows, plan_counts(args.rows, MAIN_RATES)["truncated_json"])
    atomic_write(args.out_dir / "support_tickets.jsonl", to_jsonl(rng, main_rows, truncated))

    legacy_rng = random.Random(args.seed + 10_007)
    legacy_rows = build_rows(legacy_rng, args.legacy_rows, "L", LEGACY_RATES, others=main_rows)
    atomic_write(args.out_dir / "support_tickets_legacy.csv", to_csv(legacy_rows))

    print(summarise("support_tickets.jsonl", main_rows, {"truncated_json": len(truncated)}))  # noqa: T201
    print(summarise("support_tickets_legacy.csv", legacy_rows, {}))  # noqa: T201


if __name__ == "__main__":
    main()
