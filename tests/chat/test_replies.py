"""The replies that need no model."""

from __future__ import annotations

from support_bot.chat.replies import (
    ABSTAIN_TEXT,
    RELATED_OFFER,
    RELATED_TEXT,
    abstain_text,
)


def test_the_declining_text_lists_related_questions_between_apology_and_offer():
    assert abstain_text([]) == ABSTAIN_TEXT
    text = abstain_text([{"question": "Do gift cards expire?"}, {"question": "Where are your stores?"}])
    assert text == f"{RELATED_TEXT}\n\n- Do gift cards expire?\n- Where are your stores?\n\n{RELATED_OFFER}"
