"""The customer's and the reviewer's first hour, in browsers.

"<Agent> joined the chat" and "This conversation was resolved" are part of the stored conversation: the customer sees
each once, live, and again after a reload, in the widget on another site and on the demo page. A suggested FAQ entry
that still holds a placeholder is flagged on the console's suggestions page until ops reword and save it.

The bot and its fixtures are those of test_widget_browser: the app in this process on the fake LLM backend, reached
by the widget through a proxy; the demo page and the console are served by the same app. The test acts as the agent
through the handoff functions.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from support_bot import handoff
from support_bot.core.db import session_scope
from support_bot.models import Conversation, FaqSuggestion, Message, User
from support_bot.ops import auth
from tests.conftest import PASSWORD, add_user
from tests.e2e import test_widget_browser as widget_tests
from tests.e2e.test_widget_browser import (
    LIVE,
    Site,
    conversation_id,
    open_widget,
    stored,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

site = widget_tests.site
chromium = widget_tests.chromium
context = widget_tests.context

JOINED = "Dana Agent joined the chat."
RESOLVED = "This conversation was resolved."

# Every line of the widget's log in one call: the log is drawn anew after each change, so no element is held across
# calls.
WIDGET_LINES = """() => Array.from(document.querySelector('support-bot-widget').shadowRoot.querySelectorAll('.log > li'))
  .map(li => [li.dataset.role, li.dataset.role === 'notice' ? li.textContent : ''])"""
DEMO_LINES = """() => Array.from(document.querySelectorAll('#chat-log > li'))
  .map(li => [li.dataset.role, li.dataset.role === 'notice' ? li.textContent : ''])"""


def online_agent(settings, username: str) -> str:
    with session_scope(settings) as session:
        user, _ = auth.create_user(
            session, settings=settings, username=username, role="agent", password="correct horse battery",
            display_name="Dana Agent", must_change_password=False,
        )
        user_id = user.id
    with session_scope(settings) as session:
        handoff.set_presence(session, settings, agent=session.get(User, user_id), status="online")
    return user_id


def as_agent(settings, fn, agent_id: str, conv_id: str) -> None:
    with session_scope(settings) as session:
        fn(session, settings, conversation_id=conv_id, agent=session.get(User, agent_id))


def notices(page, script: str) -> list[str]:
    return [text for role, text in page.evaluate(script) if role == "notice"]


def wait_notices(page, script: str, expected: list[str]) -> None:
    """Wait until the log's stored lines about the chat are exactly `expected`, in order."""
    page.wait_for_function(
        f"""expected => {{ const got = ({script})().filter(x => x[0] === 'notice').map(x => x[1]);
                          return JSON.stringify(got.slice(-expected.length)) === JSON.stringify(expected); }}""",
        arg=expected,
        timeout=LIVE,
    )


def test_widget_shows_joined_and_resolved_once_live_and_again_after_a_reload(site: Site, context):
    agent = online_agent(site.settings, "dana-widget")
    page = context.new_page()
    page.goto(site.page_url("lines"))
    open_widget(page)
    page.locator(".chip", has_text="Talk to a person").click()
    page.locator(".banner", has_text="Connecting you").wait_for(timeout=LIVE)
    conv_id = conversation_id(page)
    asked = notices(page, WIDGET_LINES)  # the answer to the button, this page's own

    as_agent(site.settings, handoff.claim, agent, conv_id)
    wait_notices(page, WIDGET_LINES, [JOINED])
    assert notices(page, WIDGET_LINES) == [*asked, JOINED]
    page.reload()
    page.locator(".panel").wait_for(state="visible", timeout=LIVE)
    wait_notices(page, WIDGET_LINES, [JOINED])
    assert notices(page, WIDGET_LINES) == [JOINED]

    as_agent(site.settings, handoff.resolve, agent, conv_id)
    wait_notices(page, WIDGET_LINES, [JOINED, RESOLVED])
    page.locator("form.rating").wait_for(state="visible", timeout=LIVE)
    page.reload()
    page.locator(".panel").wait_for(state="visible", timeout=LIVE)
    wait_notices(page, WIDGET_LINES, [JOINED, RESOLVED])
    assert notices(page, WIDGET_LINES) == [JOINED, RESOLVED]
    # What the widget shows is what is stored, in the stored order.
    ids = page.evaluate("""() => Array.from(document.querySelector('support-bot-widget').shadowRoot
        .querySelectorAll('.log > li[data-id]')).map(li => li.dataset.id)""")
    assert ids == [m.id for m in stored(site, conv_id)]
    assert [m.role for m in stored(site, conv_id)][-2:] == ["system", "system"]


def test_demo_page_shows_joined_and_resolved_once_live_and_again_after_a_reload(site: Site, context):
    agent = online_agent(site.settings, "dana-demo")
    page = context.new_page()
    page.goto(site.server.url + "/")
    page.click("#chat-handoff-btn")
    page.locator("#chat-handoff-status", has_text="Connecting you").wait_for(timeout=LIVE)
    conv_id = page.evaluate("JSON.parse(localStorage.getItem('support-bot.conversation')).id")
    asked = notices(page, DEMO_LINES)

    as_agent(site.settings, handoff.claim, agent, conv_id)
    wait_notices(page, DEMO_LINES, [JOINED])
    assert notices(page, DEMO_LINES) == [*asked, JOINED]
    as_agent(site.settings, handoff.resolve, agent, conv_id)
    wait_notices(page, DEMO_LINES, [JOINED, RESOLVED])
    assert notices(page, DEMO_LINES) == [*asked, JOINED, RESOLVED]

    page.reload()
    page.locator("#chat-rating").wait_for(state="visible", timeout=LIVE)
    wait_notices(page, DEMO_LINES, [JOINED, RESOLVED])
    assert notices(page, DEMO_LINES) == [JOINED, RESOLVED]
    with session_scope(site.settings) as session:
        assert session.get(Conversation, conv_id).status == "resolved"


def test_a_flagged_suggestion_loses_its_flag_once_ops_reword_and_save_it(site: Site, context):
    agent = online_agent(site.settings, "dana-learning")
    with session_scope(site.settings) as session:
        conv = Conversation(token_hash="x" * 64)
        session.add(conv)
        session.flush()
        session.add(Message(conversation_id=conv.id, role="customer", text="My parcel is stuck at the depot, why?"))
        conv_id = conv.id
    with session_scope(site.settings) as session:
        handoff.start_handoff(session, site.settings, session.get(Conversation, conv_id), reason="button")
    as_agent(site.settings, handoff.claim, agent, conv_id)
    with session_scope(site.settings) as session:
        handoff.agent_reply(
            session, site.settings, conversation_id=conv_id, agent=session.get(User, agent),
            text="Hi, I'm Dana. Parcel 88123 waits for the next truck: depots ship held parcels the next working day.",
        )
    as_agent(site.settings, handoff.resolve, agent, conv_id)
    with session_scope(site.settings) as session:
        suggestion_id = session.scalar(select(FaqSuggestion.id).where(FaqSuggestion.conversation_id == conv_id))
    assert suggestion_id, "resolving the chat made no suggestion"

    add_user(site.settings, "olga-first-hour", "ops", "Olga Ops")
    page = context.new_page()
    page.goto(site.server.url + "/console/login?next=/console/suggestions")
    page.fill("input[name=username]", "olga-first-hour")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url("**/console/suggestions")
    card = page.locator(f".suggestion[data-id='{suggestion_id}']")
    assert card.get_attribute("data-flagged") == "true"
    assert card.locator(".sg-answer").input_value() == (
        "Parcel [NUMBER] waits for the next truck: depots ship held parcels the next working day."
    )
    assert card.locator(".sg-flag").all_inner_texts() == [
        "The answer holds the placeholder [NUMBER]: reword it for every customer."
    ]
    card.locator(".sg-answer").fill("Depots ship held parcels on the next working day.")
    card.locator(".sg-save").click()
    page.locator(f".suggestion[data-id='{suggestion_id}'][data-flagged=false]").wait_for(timeout=LIVE)
    assert card.locator(".sg-flags").is_hidden()
    assert card.locator(".sg-flag").count() == 0
