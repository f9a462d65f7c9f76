"""Agent summaries have a budget of their own: they are not held to the customer's answer deadline, and one cut by
its token budget keeps only what it finished, never half a sentence."""

from __future__ import annotations

from support_bot import handoff
from support_bot.handoff.summaries import SUMMARY_TIMEOUT_S, summary_timeout_s
from support_bot.llm.backends.fake import FakeEngine
from tests.handoff.test_summaries import handed_off, stored_summary


class Recording(FakeEngine):
    """A fake model that remembers the time limit each reply was given."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def stream(self, messages, *, max_new_tokens=None, stop=None, timeout_s=None):
        self.timeouts.append(timeout_s)
        return super().stream(messages, max_new_tokens=max_new_tokens, stop=stop, timeout_s=timeout_s)


def test_the_summary_gets_its_own_time_budget_not_the_customers_deadline(db):
    settings = db.model_copy(update={"llm": db.llm.model_copy(update={"timeout_s": 5.0})})
    conv_id = handed_off(settings)
    engine = Recording()
    engine.queue_reply("Customer asks about the return policy and wants a person.")
    handoff.write_agent_summary(settings, engine, conv_id)
    assert engine.timeouts == [SUMMARY_TIMEOUT_S]
    assert summary_timeout_s(settings) == SUMMARY_TIMEOUT_S > settings.llm.timeout_s
    # Never less than a customer's answer gets.
    slow = settings.model_copy(update={"llm": settings.llm.model_copy(update={"timeout_s": 900.0})})
    assert summary_timeout_s(slow) == 900.0


def test_a_summary_cut_by_its_token_budget_keeps_its_finished_sentences(db):
    budget = 14
    settings = db.model_copy(update={"handoff": db.handoff.model_copy(update={"summary_max_tokens": budget})})
    conv_id = handed_off(settings)
    first = "Customer asks about the return policy and wants a person."  # 10 words
    engine = FakeEngine()
    engine.queue_reply(f"{first} Returns are accepted within 30 days of delivery.")
    summary = handoff.write_agent_summary(settings, engine, conv_id)
    assert summary == first == stored_summary(settings, conv_id)
