"""Generate the demo dataset: customer-support tickets labelled with a category and a short reply.

    python data/raw/make_support_data.py [--out-dir data/raw] [--seed 7] [--rows 2600] [--legacy-rows 500]

It writes support_tickets.jsonl (the main export) and support_tickets_legacy.csv (an older export),
deterministically (same seed, same bytes). The data carries what real exports carry, in known
proportions, so that `llmops prep` has real work to do: exact and near duplicates, emails and phone
numbers, empty messages, rows missing a field or holding the wrong type, truncated JSON lines, and
unicode debris (non-breaking and zero-width spaces, fullwidth letters, control characters).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import tempfile
from collections import Counter
from pathlib import Path

PRODUCTS = ["wireless headphones", "running shoes", "standing desk", "coffee grinder", "winter jacket",
            "phone case", "smart watch", "desk lamp", "backpack", "electric kettle", "yoga mat", "monitor"]
NAMES = ["Ana", "Ben", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Inès", "Jonas", "Kemi", "Liam"]
DEVICES = ["iPhone", "Android phone", "iPad", "Windows laptop", "MacBook", "Chromebook"]
CARRIERS = ["UPS", "DHL", "FedEx", "the postal service"]

TEMPLATES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for order {order}, please refund the duplicate payment.",
        "My invoice for {month} shows ${amount} but my plan costs less. Can you check the billing?",
        "Why did my credit card get charged ${amount} on {date}? I did not authorise this payment.",
        "The payment for my {product} failed but the money left my bank account.",
        "I need a copy of the invoice for order {order} for my expense report.",
        "There is an extra fee of ${amount} on my bill that nobody explained.",
        "My billing address is wrong on the last invoice, it still shows my old address.",
        "I was billed for the premium plan after I downgraded last month.",
        "Can I change the card you charge every month? The old one expired.",
        "You charged me a late fee although I paid the invoice on time.",
        "The promo code was not applied and I paid full price for the {product}.",
        "Please explain the charge of ${amount} on my statement from {date}.",
    ],
    "shipping": [
        "My package with the {product} has not arrived yet, order {order}. Where is it?",
        "The tracking number for order {order} has not updated in five days.",
        "{carrier} says the parcel was delivered but I never received it.",
        "Can you ship my {product} to a different address? I moved last week.",
        "The delivery date keeps moving. When will order {order} actually arrive?",
        "My parcel is stuck in customs, what do I need to do to get the {product}?",
        "The courier left the package at the wrong house, order {order}.",
        "Do you deliver on weekends? I need the {product} before {date}.",
        "The tracking page shows the shipment returned to sender. Why?",
        "I paid for express shipping but the {product} is coming by standard post.",
        "Only half of my order {order} was delivered, the second box is missing.",
        "How long does delivery to Canada take for the {product}?",
    ],
    "returns": [
        "I want to return the {product}, it is the wrong size.",
        "How do I exchange my {product} for a different colour?",
        "Please send me a return label for order {order}.",
        "The {product} arrived damaged, I would like to send it back for a replacement.",
        "I returned the {product} two weeks ago and still have no refund for the return.",
        "Can I return an item bought on sale? It is the {product} from order {order}.",
        "The {product} does not fit, I want to exchange it for a larger one.",
        "What is your return policy for opened items like the {product}?",
        "I received the wrong item in order {order}, I ordered a {product}. How do I return it?",
        "The drop-off point refused my return parcel for the {product}.",
        "Is the return free, or do I pay the postage to send the {product} back?",
        "I want to exchange the {product} I got as a gift.",
    ],
    "account": [
        "I forgot my password and the reset email never arrives.",
        "I cannot log in to my account, it says my username does not exist.",
        "Please change the email address on my account to a new one.",
        "My account got locked after too many login attempts.",
        "How do I turn on two-factor authentication for my account?",
        "I lost my phone and cannot get the 2FA code to sign in.",
        "Someone else logged in to my account from another country, I think I was hacked.",
        "How do I delete my account and all my personal data?",
        "I want to merge my two accounts into one profile.",
        "The verification link for my new account has expired.",
        "Can I change my username? My profile still shows my old name.",
        "My account settings page does not save my new phone number preference.",
    ],
    "technical": [
        "The app crashes every time I open it on my {device}.",
        "I get error code {code} when I try to load my dashboard.",
        "The website will not load on my {device}, it just shows a blank page.",
        "Notifications stopped working on my {device} after the last update.",
        "The {product} companion app cannot connect over Bluetooth on my {device}.",
        "Sync between my {device} and the web app fails with error {code}.",
        "The checkout page freezes when I press the pay button on my {device}.",
        "Video playback in the app stutters and then the screen goes black.",
        "After updating the firmware the {product} does not turn on anymore.",
        "The search bar returns an internal server error {code}.",
        "The app logs me out every few minutes on my {device}.",
        "Images do not load in the app, I only see grey boxes.",
    ],
    "cancellation": [
        "Please cancel my subscription, I no longer need it.",
        "I want to cancel order {order} before it ships.",
        "How do I close my plan? I cannot find the cancel button.",
        "Cancel my membership at the end of this billing period please.",
        "I signed up for the free trial by mistake, please cancel it.",
        "Stop my monthly box subscription starting {month}.",
        "I want to terminate my contract early. What are the cancellation terms?",
        "Please cancel the auto-renewal on my annual plan.",
        "I ordered the {product} twice by accident, cancel one of the orders.",
        "Cancel my pre-order of the {product}, I changed my mind.",
        "I am moving abroad and need to end my service plan.",
        "Please cancel everything on my account and stop all future deliveries.",
    ],
}

REPLIES: dict[str, list[str]] = {
    "billing": ["I've checked your billing and issued a correction for order {order}.",
                "Sorry about the charge, a refund of the duplicate payment is on its way.",
                "I've sent the invoice to the email address on your account."],
    "shipping": ["I've contacted the carrier and will update you on order {order} within 24 hours.",
                 "Your parcel is on its way; the new tracking link is in your inbox.",
                 "I've opened a delivery investigation for order {order}."],
    "returns": ["I've emailed you a prepaid return label for order {order}.",
                "Your exchange is approved; ship the item back and we'll send the new one.",
                "Your return was received and the refund will arrive in 3-5 days."],
    "account": ["I've sent a fresh password reset link to your email.",
                "Your account is unlocked; please sign in again.",
                "I've updated your account details as requested."],
    "technical": ["Please update to the latest app version; this fixes the issue you describe.",
                  "I've passed error {code} to our engineers and will follow up.",
                  "Clearing the app cache and restarting usually resolves this; let me know if it persists."],
    "cancellation": ["Your subscription is cancelled and you won't be charged again.",
                     "Order {order} has been cancelled before shipping.",
                     "Auto-renewal is turned off; your plan ends at the close of this period."],
}

OPENERS = ["", "", "", "Hi, ", "Hello, ", "Hi there. ", "Good morning, ", "Hey, "]
CLOSERS = ["", "", "", " Thanks.", " Thank you!", " Regards, {name}.", " Please help.", " Thanks in advance."]
EMAIL_DOMAINS = ["example.com", "example.org", "mail.example.net"]


def _slots(rng: random.Random) -> dict[str, str]:
    return {
        "order": f"#{rng.randint(10000, 99999)}",
        "amount": f"{rng.randint(5, 400)}.{rng.randint(0, 99):02d}",
        "date": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "month": rng.choice(["January", "March", "May", "July", "September", "November"]),
        "product": rng.choice(PRODUCTS),
        "device": rng.choice(DEVICES),
        "carrier": rng.choice(CARRIERS),
        "code": f"E{rng.randint(100, 999)}",
        "name": rng.choice(NAMES),
    }


def _email(rng: random.Random, name: str) -> str:
    return f"{name.lower().replace('é', 'e').replace('è', 'e')}.{rng.randint(1, 99)}@{rng.choice(EMAIL_DOMAINS)}"


def _phone(rng: random.Random) -> str:
    return rng.choice([f"+1 415-555-{rng.randint(100, 999):04d}", f"(415) 555-{rng.randint(100, 999):04d}",
                       f"020 7946 {rng.randint(0, 999):04d}", f"+44 20 7946 {rng.randint(0, 999):04d}"])


def _clean_record(rng: random.Random, index: int) -> dict[str, object]:
    category = sorted(TEMPLATES)[index % len(TEMPLATES)]  # balanced by construction
    slots = _slots(rng)
    message = rng.choice(OPENERS) + rng.choice(TEMPLATES[category]).format(**slots) + \
        rng.choice(CLOSERS).format(**slots)
    roll = rng.random()
    if roll < 0.08:
        message += f" You can reach me at {_email(rng, slots['name'])}."
    elif roll < 0.13:
        message += f" Call me on {_phone(rng)}."
    elif roll < 0.15:
        message += f" My email is {_email(rng, slots['name'])} and my phone is {_phone(rng)}."
    return {"message": message, "category": category, "reply": rng.choice(REPLIES[category]).format(**slots)}


def _near_duplicate(rng: random.Random, message: str) -> str:
    edit = rng.randrange(4)
    if edit == 0:
        return message.lower()
    if edit == 1:
        return message.rstrip(".!?") + rng.choice(["!!", "?", " "])
    if edit == 2:
        return message.replace(" ", "  ", 1)
    words = message.split()
    i = rng.randrange(len(words))
    words[i] = rng.choice(["really", "honestly", "please", "again"])
    return " ".join(words)


def _dirty(rng: random.Random, record: dict[str, object]) -> dict[str, object]:
    roll = rng.random()
    if roll < 0.01:
        return {**record, "message": rng.choice(["", "   ", "\t\n"])}
    if roll < 0.015:
        return {k: v for k, v in record.items() if k != "category"}
    if roll < 0.018:
        return {**record, "message": rng.choice([12345, ["a", "list"], None, {"text": "nested"}])}
    if roll < 0.024:  # unicode debris a normaliser should clean
        text = str(record["message"])
        return {**record, "message": rng.choice([
            text.replace(" ", "\u00a0", 2), text.replace(" ", " \u200b", 1), "\ufeff" + text,
            text.replace("I ", "Ｉ ", 1), text + "\x07",
        ])}
    return record


def build_rows(rng: random.Random, n: int, prefix: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for i in range(n):
        roll = rng.random()
        if rows and roll < 0.03:  # exact duplicate of an earlier ticket (re-sent form)
            base = dict(rng.choice(rows))
        elif rows and roll < 0.06:  # near duplicate
            base = dict(rng.choice(rows))
            if isinstance(base.get("message"), str) and base["message"].strip():
                base["message"] = _near_duplicate(rng, base["message"])
        else:
            base = _dirty(rng, _clean_record(rng, i))
        base.pop("id", None)
        rows.append({"id": f"{prefix}{i:05d}", **base})
    return rows


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)


def to_jsonl(rng: random.Random, rows: list[dict[str, object]]) -> tuple[str, int]:
    lines, truncated = [], 0
    for row in rows:
        line = json.dumps(row, ensure_ascii=False)
        if rng.random() < 0.003:  # an export cut off mid-record
            line, truncated = line[: len(line) // 2], truncated + 1
        lines.append(line)
    return "\n".join(lines) + "\n", truncated


def to_csv(rows: list[dict[str, object]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["id", "message", "category", "reply"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in writer.fieldnames})
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=str(Path(__file__).parent))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rows", type=int, default=2600)
    parser.add_argument("--legacy-rows", type=int, default=500)
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)

    main_rows = build_rows(rng, args.rows, "T")
    text, truncated = to_jsonl(rng, main_rows)
    _atomic_write(out / "support_tickets.jsonl", text)

    legacy = build_rows(rng, args.legacy_rows, "L")
    for row in legacy[:3]:  # the old system kept multi-line messages with quotes and commas
        row["message"] = f'Re: "{row["message"]}",\nsent from my phone, sorry for typos'
    _atomic_write(out / "support_tickets_legacy.csv", to_csv(legacy))

    cats = Counter(r.get("category") for r in main_rows + legacy)
    print(f"support_tickets.jsonl: {len(main_rows)} rows ({truncated} truncated lines)")  # noqa: T201
    print(f"support_tickets_legacy.csv: {len(legacy)} rows")  # noqa: T201
    print("categories:", dict(sorted(cats.items(), key=lambda kv: str(kv[0]))))  # noqa: T201


if __name__ == "__main__":
    main()
