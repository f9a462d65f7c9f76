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


def topic_mixture_vectors(topics, n: int, seed: int = 0, *, mix: float = 0.6, noise: float = 0.03):
    """n unit vectors shaped like real embeddings: topic i, plus up to `mix` of a second topic j, plus noise.

    Returns (vectors, i) with i the main topic of each vector. Mixing two real sentence embeddings spreads the
    vectors over the model's own subspace, as real chunks are, instead of into a few thousand tight balls of
    near-duplicates.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    topics = np.asarray(topics, dtype=np.float32)
    out = np.empty((n, topics.shape[1]), dtype=np.float32)
    main = rng.integers(0, len(topics), n)
    # In slices, so building a million vectors needs no temporaries of the full size.
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        other = rng.integers(0, len(topics), stop - start)
        weight = rng.uniform(0, mix, size=(stop - start, 1)).astype(np.float32)
        v = topics[main[start:stop]] + weight * topics[other]
        v += rng.normal(scale=noise, size=v.shape).astype(np.float32)
        out[start:stop] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out, main
