"""The prompt of a turn within the model's context window."""

from __future__ import annotations

from support_bot.chat.prompt import build_prompt
from support_bot.llm.prompt import ChatMessage
from tests.chat.hits import HITS


class CountingEngine:
    """Counts one token per word and a small markup cost per message, like a chat template would."""

    context_window = 300

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def prompt_tokens(self, messages: list[ChatMessage]) -> int:
        return sum(self.count_tokens(m.content) + 4 for m in messages)


def test_prompt_fits_the_window_dropping_oldest_history_never_the_question(settings):
    settings.llm.max_new_tokens = 50
    history = []
    for i in range(30):
        history += [
            ChatMessage(role="user", content=f"turn {i} " + "words " * 20),
            ChatMessage(role="assistant", content=f"reply {i} " + "words " * 20),
        ]
    question = "what about refunds for turn thirty " + "please " * 5
    engine = CountingEngine()
    messages = build_prompt(settings, engine, HITS, history, question)
    assert messages[0].role == "system" and "Returns within 30 days." in messages[0].content
    assert messages[-1] == ChatMessage(role="user", content=question)
    assert engine.prompt_tokens(messages) + settings.llm.max_new_tokens <= engine.context_window
    kept = messages[1:-1]
    assert kept and kept == history[-len(kept):]
    assert [m.role for m in kept][0] == "user"
