"""State a long-running web process keeps per thing it has seen stays bounded, whatever it is shown."""

from __future__ import annotations

from dataclasses import dataclass

from support_bot.chat import screening
from support_bot.chat.screening import Guards


@dataclass
class _Hit:
    chunk_id: str
    text: str


@dataclass
class _Verdict:
    action: str = "allow"
    category: str = "none"


class _CountingGuard:
    def __init__(self) -> None:
        self.checked: list[str] = []

    def check(self, text: str, *, entry: bool = False) -> _Verdict:
        self.checked.append(text)
        return _Verdict()


def test_the_per_source_verdict_cache_is_bounded_and_keeps_the_entries_in_use(settings, monkeypatch):
    monkeypatch.setattr(screening, "MAX_SOURCE_VERDICTS", 50, raising=False)
    guards = Guards(lambda: settings)
    guard = _CountingGuard()
    guards._input = guard
    hot = _Hit("chunk-hot", "the entry every other question retrieves")
    # Re-indexing gives every entry new chunk ids, again and again: thousands of ids over a process's life.
    for n in range(2000):
        assert guards.source_drop_verdict(_Hit(f"chunk-{n}", f"entry {n}")) is None
        guards.source_drop_verdict(hot)
    assert len(guards._source_verdicts) <= 50
    # The entry in use stayed cached all along: checked once, not once per question.
    assert guard.checked.count(hot.text) == 1
