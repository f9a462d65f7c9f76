"""Grounding, citations and the context budget of one turn."""

from __future__ import annotations

from dataclasses import dataclass

from support_bot.assistant import Assistant, support_ratio
from support_bot.llm.prompt import ChatMessage


@dataclass
class Hit:
    chunk_id: str
    source: str
    entry_id: str
    title: str
    text: str
    answer: str
    url: str | None = None


HITS = [
    Hit("c1", "faq", "ret-01", "What is your return policy?", "What is your return policy?\nReturns within 30 days.",
        "Returns within 30 days."),
    Hit("c2", "faq", "gift-01", "Do gift cards expire?", "Do gift cards expire?\nGift cards never expire.",
        "Gift cards never expire."),
]


def test_support_ratio_counts_content_words_in_sources():
    assert support_ratio("Gift cards never expire [2].", [HITS[1].text]) == 1.0
    assert support_ratio("Unicorns deliver parcels", [HITS[1].text]) == 0.0
    assert support_ratio("", [HITS[1].text]) == 0.0


def test_ground_keeps_valid_citations_and_drops_invented_ones(settings):
    answer, cites = Assistant(settings).ground("Gift cards never expire [2][5].", HITS)
    assert answer == "Gift cards never expire [2]."
    assert [(c["n"], c["entry_id"]) for c in cites] == [(2, "gift-01")]


def test_ground_credits_the_source_an_uncited_answer_uses(settings):
    answer, cites = Assistant(settings).ground("Gift cards never expire.", HITS)
    assert answer == "Gift cards never expire."
    assert [c["entry_id"] for c in cites] == ["gift-01"]


def test_ground_falls_back_to_the_source_answer_when_unsupported(settings):
    answer, cites = Assistant(settings).ground("We sell spaceships at half price [1].", HITS)
    assert answer == "Returns within 30 days. [1]"
    assert [c["entry_id"] for c in cites] == ["ret-01"]


class CountingEngine:
    """Counts one token per word and a small markup cost per message, like a chat template would."""

    context_window = 300

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def prompt_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(self.count_tokens(m.content) + 4 for m in messages)


def test_prompt_fits_the_window_dropping_oldest_history_never_the_question(settings):
    settings.llm.max_new_tokens = 50
    assistant = Assistant(settings)
    history = []
    for i in range(30):
        history += [
            ChatMessage(role="user", content=f"turn {i} " + "words " * 20),
            ChatMessage(role="assistant", content=f"reply {i} " + "words " * 20),
        ]
    question = "what about refunds for turn thirty " + "please " * 5
    engine = CountingEngine()
    messages = assistant._build_prompt(engine, HITS, history, question)
    assert messages[0].role == "system" and "Returns within 30 days." in messages[0].content
    assert messages[-1] == ChatMessage(role="user", content=question)
    assert engine.prompt_tokens(messages) + settings.llm.max_new_tokens <= engine.context_window
    kept = messages[1:-1]
    assert kept and kept == history[-len(kept):]
    assert [m.role for m in kept][0] == "user"
