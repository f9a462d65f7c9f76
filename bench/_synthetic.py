"""Deterministic synthetic support-FAQ text for benchmarks (no outside data needed)."""

from __future__ import annotations

import random

SUBJECTS = [
    "order",
    "refund",
    "invoice",
    "password",
    "account",
    "delivery",
    "warranty",
    "subscription",
    "coupon",
    "return label",
    "gift card",
    "store pickup",
    "bike frame",
    "battery",
    "charger",
    "helmet",
    "tire",
    "brake",
    "membership",
    "payment plan",
    "address",
    "email",
    "phone number",
    "newsletter",
    "data export",
]
VERBS = [
    "change",
    "cancel",
    "track",
    "reset",
    "update",
    "pay for",
    "return",
    "replace",
    "upgrade",
    "transfer",
    "download",
    "activate",
    "repair",
    "find",
    "renew",
]
WHEN = [
    "after checkout",
    "before it ships",
    "from the app",
    "while travelling",
    "on a weekend",
    "in another country",
    "without an account",
    "for a business",
    "as a gift",
    "after 30 days",
]
FILLER = (
    "you can do this from your account page and our team confirms every change by email within one business "
    "day unless the item has already left the warehouse in which case please contact support with the order "
    "number and a short description so we can help quickly"
).split()


def faq_rows(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """n (id, question, answer) rows with varied, realistic-looking wording."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        subject, verb, when = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(WHEN)
        question = f"How do I {verb} my {subject} {when}? (case {i})"
        words = [rng.choice(FILLER) for _ in range(rng.randint(25, 60))]
        answer = f"To {verb} your {subject} {when}, " + " ".join(words) + "."
        rows.append((f"q{i}", question, answer))
    return rows


def faq_csv(n: int, seed: int = 0) -> bytes:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "question", "answer"])
    writer.writerows(faq_rows(n, seed))
    return buf.getvalue().encode("utf-8")
