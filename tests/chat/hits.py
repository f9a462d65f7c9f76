"""Retrieved entries as the chat steps see them, for the chat tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Hit:
    chunk_id: str
    source: str
    entry_id: str
    title: str
    text: str
    answer: str
    url: str | None = None


@dataclass
class ScoredHit(Hit):
    score: float = 0.0


HITS = [
    Hit("c1", "faq", "ret-01", "What is your return policy?", "What is your return policy?\nReturns within 30 days.",
        "Returns within 30 days."),
    Hit("c2", "faq", "gift-01", "Do gift cards expire?", "Do gift cards expire?\nGift cards never expire.",
        "Gift cards never expire."),
]
