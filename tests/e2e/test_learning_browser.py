"""The learning loop in browsers: an agent resolves a chat, ops approve the suggested FAQ entry, and the next customer
who asks in other words gets that answer with the learned entry cited.

The server runs the fake LLM backend (it answers from the retrieved sources, citing them) and the real embedder, so
the paraphrase is found by the real retrieval.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from support_bot.core.db import session_scope
from support_bot.models import FaqSuggestion
from tests.conftest import PASSWORD, add_user
from tests.e2e.conftest import ARTIFACTS, Server
from tests.e2e.test_handoff_story import LIVE, conversation_id, create_agent, go_online, log_in, server_settings

pytestmark = [pytest.mark.slow, pytest.mark.browser]

QUESTION = "Can I ship my order to a parcel locker?"
PARAPHRASE = "Is delivery to a parcel locker possible?"
ANSWER = (
    "Yes. At checkout choose Parcel locker delivery and pick a locker on the map; the parcel waits there for 72 hours "
    "and the opening code comes by text message."
)


def create_ops(server: Server, username: str) -> None:
    add_user(server_settings(server), username, "ops", "Olga Ops")


def ops_log_in(browser, server: Server, username: str):
    page = browser.new_context().new_page()
    page.goto(server.url + "/console/login?next=/console/suggestions")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url("**/console/suggestions")
    return page


def ask(customer, text: str) -> None:
    before = customer.locator(".msg-bot:not(.streaming)").count()
    customer.fill("#chat-input", text)
    customer.press("#chat-input", "Enter")
    customer.locator(".msg-bot:not(.streaming)").nth(before).wait_for(timeout=LIVE)


def test_an_approved_suggestion_answers_the_next_customers_paraphrase_with_a_citation(fake_server, browser):
    server = fake_server
    create_agent(server, "alice", "Alice Agent")
    create_ops(server, "olga")
    agent = log_in(browser, server, "alice")
    go_online(agent)

    # Before: the knowledge base (the demo FAQ) has no answer about parcel lockers.
    first = browser.new_context().new_page()
    first.goto(server.url + "/")
    ask(first, PARAPHRASE)
    assert "Parcel locker delivery" not in first.locator(".msg-bot").last.inner_text()

    # A customer asks, then asks for a person; the agent claims, answers and resolves.
    customer = browser.new_context().new_page()
    customer.goto(server.url + "/")
    ask(customer, QUESTION)
    customer.fill("#chat-input", "I want to talk to a real person please")
    customer.press("#chat-input", "Enter")
    customer.locator("#chat-handoff-status", has_text="Connecting you to a person").wait_for(timeout=LIVE)
    conv_id = conversation_id(customer)
    item = agent.locator(f".queue-item[data-id='{conv_id}']")
    item.wait_for(timeout=LIVE)
    item.locator(".claim-btn").click()
    agent.wait_for_url(f"**/console/conversations/{conv_id}")
    agent.locator("#conv-status[data-status=assigned]").wait_for(timeout=LIVE)
    agent.fill("#reply-text", ANSWER)
    agent.click("#reply-send")
    customer.locator(".msg-agent .msg-text", has_text="Parcel locker delivery").wait_for(timeout=LIVE)
    agent.click("#resolve-btn")
    agent.locator("#conv-status[data-status=resolved]").wait_for(timeout=LIVE)

    # Ops find the suggestion (the problem, not the request for a person) and approve it.
    ops = ops_log_in(browser, server, "olga")
    assert ops.locator("#console-nav a", has_text="Suggestions").get_attribute("aria-current") == "page"
    with session_scope(server_settings(server)) as session:
        suggestion_id = session.scalar(select(FaqSuggestion.id).where(FaqSuggestion.conversation_id == conv_id))
    assert suggestion_id, "resolving the chat made no suggestion"
    card = ops.locator(f".suggestion[data-id='{suggestion_id}']")
    card.wait_for(timeout=LIVE)
    assert card.locator(".sg-question").input_value() == QUESTION
    assert card.locator(".sg-answer").input_value() == ANSWER
    assert ops.locator("#learned-source").get_attribute("data-state") == "empty"
    card.locator(".sg-more summary").click()
    card.locator(".sg-transcript .sg-line-agent", has_text="Parcel locker delivery").wait_for(timeout=LIVE)
    card.locator(".sg-approve").click()
    card.locator(".sg-status", has_text="approved").wait_for(timeout=LIVE)
    # The page follows the ingest until the learned source is live.
    ops.locator("#learned-source[data-state=live]").wait_for(timeout=LIVE)
    assert "Live: version 1, 1 entry" in ops.locator("#learned-status").inner_text()
    assert ops.locator(".status-tabs a[data-filter=pending] .count").inner_text() == "0"
    assert ops.locator(".status-tabs a[data-filter=approved] .count").inner_text() == "1"
    ops.locator(f".suggestion[data-id='{suggestion_id}'][data-ingest=live]").wait_for(timeout=LIVE)
    ops.screenshot(path=str(ARTIFACTS / "console-suggestions.png"), full_page=True)

    # A new customer asks in other words: the bot answers with the learned entry, cited.
    newcomer = browser.new_context().new_page()
    newcomer.goto(server.url + "/")
    ask(newcomer, PARAPHRASE)
    reply = newcomer.locator(".msg-bot").last
    assert "Parcel locker delivery" in reply.locator(".msg-text").inner_text()
    citation = reply.locator(f".citation[data-entry-id='{suggestion_id}']")
    assert citation.count() == 1
    assert QUESTION in citation.inner_text()
    newcomer.screenshot(path=str(ARTIFACTS / "customer-learned-answer.png"), full_page=True)
