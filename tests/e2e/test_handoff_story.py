"""Human handoff in two browsers: a customer asks for a person; an agent claims, replies, resolves; the customer rates.

The server runs the fake LLM backend: this story is about the handoff, not about answers, and the fake keeps it fast.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.models import Conversation, Message
from tests.conftest import PASSWORD, add_user
from tests.e2e.conftest import ARTIFACTS, Server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

XSS = "<img src=x onerror=window.__xss=1>"
XSS_AGENT = "<img src=x onerror=window.__xss=2><script>window.__xss=3</script>"
LIVE = 60_000  # ms: generous for a loaded 2-core machine; each wait ends as soon as the page shows the thing


def server_settings(server: Server) -> Settings:
    return Settings(data_dir=server.data_dir)


def create_agent(server: Server, username: str, display_name: str) -> None:
    add_user(server_settings(server), username, "agent", display_name)


def log_in(browser, server: Server, username: str):
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url + "/console/login?next=/console/queue")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url("**/console/queue")
    page.locator("#live-status[data-state=live]").wait_for(timeout=LIVE)
    return page


def go_online(page) -> None:
    with page.expect_response(lambda r: r.url.endswith("/api/console/presence") and r.request.method == "POST") as r:
        page.select_option("#presence", "online")
    assert r.value.ok, r.value.text()


def conversation_id(customer) -> str:
    return customer.evaluate("JSON.parse(localStorage.getItem('support-bot.conversation')).id")


def stored(server: Server, conv_id: str) -> tuple[Conversation, list[Message]]:
    with session_scope(server_settings(server)) as session:
        conv = session.get(Conversation, conv_id)
        query = select(Message).where(Message.conversation_id == conv_id).order_by(Message.seq)
        messages = list(session.scalars(query))
        session.expunge_all()
    return conv, messages


def test_customer_reaches_an_agent_who_replies_live_and_resolves_and_the_customer_rates(fake_server, browser):
    server = fake_server
    create_agent(server, "alice", "Alice Agent")

    # The customer asks for a person in their own words; no agent is online yet, so a message can be left.
    customer = browser.new_context().new_page()
    customer.goto(server.url + "/")
    customer.fill("#chat-input", "I want to talk to a real person please")
    customer.press("#chat-input", "Enter")
    handoff_status = customer.locator("#chat-handoff-status")
    # No place in a queue nobody serves: the status says once what happens next.
    handoff_status.filter(has_text="No one from our team is online right now").wait_for(timeout=LIVE)
    customer.locator("#chat-offline").wait_for(state="visible", timeout=LIVE)
    assert "in the queue" not in handoff_status.inner_text()
    customer.fill("#chat-offline-message", "My parcel never arrived")
    customer.fill("#chat-offline-email", "sam@example.com")
    customer.click("#chat-offline-send")
    handoff_status.filter(has_text="We received your message").wait_for(timeout=LIVE)
    assert customer.locator("#chat-offline").is_hidden()
    assert "Connecting you" not in handoff_status.inner_text() and "in the queue" not in handoff_status.inner_text()
    conv_id = conversation_id(customer)

    # The agent logs in in another browser, goes online and finds the chat in the queue with reason and summary.
    agent = log_in(browser, server, "alice")
    go_online(agent)
    item = agent.locator(f".queue-item[data-id='{conv_id}']")
    item.wait_for(timeout=LIVE)
    assert "asked for a person" in item.locator(".queue-reason").inner_text()
    item.locator(".queue-summary").filter(has_not_text="No summary yet.").wait_for(timeout=LIVE)
    assert item.locator(".queue-summary").inner_text().strip()
    assert item.locator(".queue-preview").inner_text() == "My parcel never arrived"
    assert "sam@example.com" in item.locator(".queue-email").inner_text()
    agent.screenshot(path=str(ARTIFACTS / "console-queue.png"), full_page=True)

    item.locator(".claim-btn").click()
    agent.wait_for_url(f"**/console/conversations/{conv_id}")
    agent.locator("#conv-status[data-status=assigned]").wait_for(timeout=LIVE)
    assert "asked for a person" in agent.locator("#conv-reason").inner_text()
    assert agent.locator("#conv-summary").inner_text().strip() not in ("", "No summary yet.")
    assert agent.locator(".tmsg-customer .tmsg-text").all_inner_texts() == [
        "I want to talk to a real person please", "My parcel never arrived"
    ]
    assert agent.locator("#conv-email").inner_text() == "sam@example.com"

    # The customer sees the moment the agent joins, then the agent typing, then the reply, all without reloading.
    customer.locator(".msg-notice", has_text="Alice Agent joined the chat.").wait_for(timeout=LIVE)
    # The status line follows the notice (the stream sends the stored line, then the change of state).
    handoff_status.filter(has_text="You are chatting with Alice Agent").wait_for(timeout=LIVE)
    assert customer.locator("#chat-offline").is_hidden()
    agent.click(".canned-manage summary")
    agent.fill("#canned-title", "look-up")
    agent.fill("#canned-text", "Let me look at your order.")
    agent.click("#canned-form button[type=submit]")
    agent.locator("#canned-picker option", has_text="look-up").wait_for(state="attached", timeout=LIVE)
    agent.fill("#reply-text", "Hi, I'm Alice.")
    customer.locator("#chat-typing", has_text="Alice Agent is typing").wait_for(timeout=LIVE)
    agent.select_option("#canned-picker", label="look-up")
    assert agent.input_value("#reply-text") == "Hi, I'm Alice. Let me look at your order."
    agent.click("#reply-send")
    reply = customer.locator(".msg-agent .msg-text", has_text="Let me look at your order.")
    reply.wait_for(timeout=LIVE)
    assert customer.locator("#chat-typing").is_hidden()
    assert customer.locator(".msg-agent .msg-author").first.inner_text() == "Alice Agent"
    customer.screenshot(path=str(ARTIFACTS / "customer-handoff.png"), full_page=True)

    # A reload restores the chat, its state and the live stream (resumed after the last event seen, no repeats).
    customer.reload()
    handoff_status.filter(has_text="You are chatting with Alice Agent").wait_for(timeout=LIVE)
    assert customer.locator(".msg-agent .msg-text").all_inner_texts() == ["Hi, I'm Alice. Let me look at your order."]

    # While the agent owns the chat the bot stays silent; the customer's line reaches the console live.
    bots_before = customer.locator(".msg-bot").count()
    customer.fill("#chat-input", "Thanks, it is order 1234")
    customer.press("#chat-input", "Enter")
    agent.locator(".tmsg-customer .tmsg-text", has_text="order 1234").wait_for(timeout=LIVE)
    customer.locator("#chat-send:enabled").wait_for(timeout=LIVE)
    assert customer.locator(".msg-bot").count() == bots_before

    agent.fill("#note-text", "Checked the warehouse: parcel left today")
    agent.click("#note-send")
    agent.locator(".tmsg-note .tmsg-text", has_text="parcel left today").wait_for(timeout=LIVE)
    agent.screenshot(path=str(ARTIFACTS / "console-conversation.png"), full_page=True)

    agent.click("#resolve-btn")
    agent.locator("#conv-status[data-status=resolved]").wait_for(timeout=LIVE)
    rating_form = customer.locator("#chat-rating")
    rating_form.wait_for(state="visible", timeout=LIVE)
    assert "parcel left today" not in customer.locator("#chat-log").inner_text()

    customer.click(".chat-star[data-rating='4']")
    customer.fill("#chat-rating-comment", "Quick and friendly")
    customer.click("#chat-rating-send")
    handoff_status.filter(has_text="Thank you for your feedback").wait_for(timeout=LIVE)
    assert customer.locator(".msg-agent").count() == 1
    # The console shows the rating live, as well as storing it.
    agent.locator("#conv-rating", has_text="Quick and friendly").wait_for(timeout=LIVE)
    assert agent.locator("#conv-rating").inner_text().startswith("★★★★☆")

    conv, messages = stored(server, conv_id)
    assert conv.status == "resolved"
    assert (conv.rating, conv.rating_comment) == (4, "Quick and friendly")
    notes = [m for m in messages if m.private]
    assert [m.text for m in notes] == ["Checked the warehouse: parcel left today"]
    assert [m.text for m in messages if m.role == "agent" and not m.private] == [
        "Hi, I'm Alice. Let me look at your order."
    ]
    assert conv.contact_email == "sam@example.com"


def test_markup_in_messages_names_and_notes_stays_inert_in_both_views(fake_server, browser):
    server = fake_server
    create_agent(server, "mallory", XSS)
    agent = log_in(browser, server, "mallory")
    go_online(agent)

    customer = browser.new_context().new_page()
    customer.goto(server.url + "/")
    customer.fill("#chat-input", XSS)
    customer.press("#chat-input", "Enter")
    customer.locator(".msg-bot:not(.streaming)").wait_for(timeout=LIVE)
    customer.click("#chat-handoff-btn")
    customer.locator("#chat-handoff-status", has_text="Connecting you to a person").wait_for(timeout=LIVE)
    conv_id = conversation_id(customer)

    # The queue page was open before the customer asked: the chat appears live, its preview shown as text.
    item = agent.locator(f".queue-item[data-id='{conv_id}']")
    item.wait_for(timeout=LIVE)
    assert item.locator(".queue-preview").inner_text() == XSS
    item.locator(".claim-btn").click()
    agent.wait_for_url(f"**/console/conversations/{conv_id}")
    agent.locator("#conv-status[data-status=assigned]").wait_for(timeout=LIVE)
    assert agent.locator(".tmsg-customer .tmsg-text").first.inner_text() == XSS

    agent.fill("#reply-text", XSS_AGENT)
    agent.click("#reply-send")
    agent.locator(".tmsg-agent .tmsg-text", has_text="window.__xss=3").wait_for(timeout=LIVE)
    agent.fill("#note-text", XSS)
    agent.click("#note-send")
    agent.locator(".tmsg-note .tmsg-text").wait_for(timeout=LIVE)

    reply = customer.locator(".msg-agent .msg-text")
    reply.wait_for(timeout=LIVE)
    assert reply.inner_text() == XSS_AGENT
    assert customer.locator(".msg-agent .msg-author").inner_text() == XSS
    assert customer.locator(".msg-notice", has_text="joined the chat").inner_text() == XSS + " joined the chat."
    assert customer.locator(".msg-customer .msg-text").first.inner_text() == XSS
    assert agent.locator(".tmsg-note .tmsg-text").inner_text() == XSS
    assert agent.locator(".tmsg-agent .tmsg-who").inner_text() == XSS

    for page, log in ((customer, "#chat-log"), (agent, "#transcript")):
        assert page.evaluate("window.__xss") is None
        assert page.locator(f"{log} img, {log} script").count() == 0
    assert agent.locator("#console-app img, #console-app script").count() == 0
