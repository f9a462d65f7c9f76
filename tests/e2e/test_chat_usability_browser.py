"""Customer-reported usability faults, in the embeddable widget (on a host page of another origin) and on the demo
page: focus after sending, the scroll position after a reload, and how the related questions of a declined reply are
shown and reached from the keyboard.

The bot and its fixtures are those of test_widget_browser: the app in this process on the fake LLM backend over the
demo FAQ, reached by the widget through a proxy; the demo page is served by the same app.
"""

from __future__ import annotations

import pytest

from tests.e2e import test_widget_browser as widget_tests
from tests.e2e.test_widget_browser import LIVE, Site, open_widget, shadow, wait_answered

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# That module's fixtures, used here by name: its bot (with the demo page on the same app) and browser.
site = widget_tests.site
chromium = widget_tests.chromium
context = widget_tests.context

DECLINED_Q = "Can I pay with a credit card?"  # nothing answers it; pay-01 and others are offered as related


@pytest.fixture
def several_related(site: Site):
    """Offer every related question the search finds, so a decline lists more than one."""
    retrieval = site.settings.retrieval
    before = retrieval.related_min_score
    retrieval.related_min_score = 0.0
    yield
    retrieval.related_min_score = before


ACTIVE_LABEL = "r => r.activeElement && r.activeElement.getAttribute('aria-label')"


def demo_answered(page, count: int = 1) -> None:
    """Wait until the demo page shows `count` stored bot replies and nothing is streaming."""
    page.wait_for_function(
        """n => document.querySelectorAll('#chat-log li.msg-bot[data-id]').length >= n
                && !document.querySelector('#chat-log .streaming')""",
        arg=count,
        timeout=LIVE,
    )


def test_widget_send_button_keeps_the_focus_in_the_text_box(site: Site, context):
    page = context.new_page()
    page.goto(site.page_url("focus"))
    open_widget(page)
    box = page.locator(".composer textarea")
    box.fill("How much does shipping cost?")
    page.locator("button.send[aria-label=Send]").click()
    # At once, while the answer is still on its way: the next words go into the box.
    assert shadow(page, ACTIVE_LABEL) == "Your message"
    wait_answered(page)
    assert shadow(page, ACTIVE_LABEL) == "Your message"
    page.keyboard.type("Do you ship abroad?")
    assert box.input_value() == "Do you ship abroad?"
    page.keyboard.press("Escape")
    page.locator(".panel").wait_for(state="hidden", timeout=LIVE)


def test_demo_send_button_keeps_the_focus_in_the_text_box(site: Site, context):
    page = context.new_page()
    page.goto(site.server.url + "/")
    page.fill("#chat-input", "How much does shipping cost?")
    page.click("#chat-send")
    assert page.evaluate("() => document.activeElement.id") == "chat-input"
    demo_answered(page)
    assert page.evaluate("() => document.activeElement.id") == "chat-input"
    page.keyboard.type("Do you ship abroad?")
    assert page.input_value("#chat-input") == "Do you ship abroad?"


AT_BOTTOM = """r => { const log = r.querySelector('.log');
  return {top: log.scrollTop, view: log.clientHeight, height: log.scrollHeight}; }"""


def assert_at_bottom(page) -> None:
    pos = shadow(page, AT_BOTTOM)
    assert pos["height"] > pos["view"] + 100, f"the conversation does not overflow the log: {pos}"
    assert abs(pos["top"] + pos["view"] - pos["height"]) <= 2, f"not scrolled to the newest message: {pos}"


def test_widget_reload_shows_the_newest_message(site: Site, chromium):
    # A short window: a few answers overflow the log.
    ctx = chromium.new_context(viewport={"width": 1280, "height": 700})
    try:
        page = ctx.new_page()
        page.goto(site.page_url("long"))
        open_widget(page)
        questions = ("How much does shipping cost?", "How long does it take to get my refund?",
                     "Do you ship internationally?", "Which payment methods do you accept?")
        for n, question in enumerate(questions, 1):
            page.locator(".composer textarea").fill(question)
            page.locator(".composer textarea").press("Enter")
            wait_answered(page, n)
        assert_at_bottom(page)
        # Nobody is online: the offer to leave a message appears under the log, which gets shorter.
        page.locator(".chip", has_text="Talk to a person").click()
        page.locator("form.offline").wait_for(state="visible", timeout=LIVE)
        assert_at_bottom(page)

        # Reloaded while open: it opens again on the stored conversation, at its end.
        page.reload()
        page.locator(".panel").wait_for(state="visible", timeout=LIVE)
        wait_answered(page, len(questions))
        # The status (with the offline form) arrives after the history is drawn: the end must stay in view.
        page.locator("form.offline").wait_for(state="visible", timeout=LIVE)
        page.wait_for_timeout(300)
        assert_at_bottom(page)

        # Reloaded while closed: opening it shows the end too.
        page.locator("button[aria-label='Close chat']").click()
        page.reload()
        open_widget(page)
        wait_answered(page, len(questions))
        page.locator("form.offline").wait_for(state="visible", timeout=LIVE)
        page.wait_for_timeout(300)
        assert_at_bottom(page)
    finally:
        ctx.close()


def related_texts(bubble) -> list[str]:
    return [t.strip() for t in bubble.locator("button.ask").all_inner_texts()]


def check_related(page, bubble) -> list[str]:
    """Each related question shows once, as an aligned button; returns the questions."""
    questions = related_texts(bubble)
    assert len(questions) >= 2, questions
    text = bubble.inner_text()
    assert "may be related" in text
    for q in questions:
        assert text.count(q) == 1, f"{q!r} is shown {text.count(q)} times:\n{text}"
    # Measured in one call: the widget draws the stored conversation again after an answer, and a button measured
    # between two calls may be the one just taken out of the page.
    lefts = set(bubble.evaluate(
        "li => Array.from(li.querySelectorAll('button.ask')).map(b => Math.round(b.getBoundingClientRect().left))"))
    assert len(lefts) == 1, f"the related questions are not aligned: left edges {sorted(lefts)}"
    return questions


def test_widget_related_questions_show_once_aligned_and_reachable_by_keyboard(site: Site, context, several_related):
    page = context.new_page()
    page.goto(site.page_url("related"))
    open_widget(page)
    page.locator(".composer textarea").fill(DECLINED_Q)
    page.locator(".composer textarea").press("Enter")
    wait_answered(page)
    declined = page.locator("li[data-role=bot]").first
    questions = check_related(page, declined)
    # The list sits with the reply's text, not indented under a bullet of its own.
    edges = shadow(page, """r => { const li = r.querySelector('li[data-role=bot]');
        return [li.querySelector('.text p').getBoundingClientRect().left,
                li.querySelector('button.ask').getBoundingClientRect().left]; }""")
    assert abs(edges[0] - edges[1]) <= 1, edges

    # Tab from the conversation log reaches the questions in order; Enter asks the one with the focus.
    shadow(page, "r => r.querySelector('.log').focus()")
    page.keyboard.press("Tab")
    assert shadow(page, "r => r.activeElement.textContent") == questions[0]
    page.keyboard.press("Tab")
    assert shadow(page, "r => r.activeElement.textContent") == questions[1]
    page.keyboard.press("Enter")
    wait_answered(page, 2)
    assert page.locator("li[data-role=customer]").nth(1).inner_text() == questions[1]

    # The stored reply, shown again after a reload, is rendered the same way.
    page.reload()
    page.locator(".panel").wait_for(state="visible", timeout=LIVE)
    wait_answered(page, 2)
    assert check_related(page, page.locator("li[data-role=bot]").first) == questions


def test_demo_related_questions_show_once_aligned_and_reachable_by_keyboard(site: Site, context, several_related):
    page = context.new_page()
    page.goto(site.server.url + "/")
    page.fill("#chat-input", DECLINED_Q)
    page.press("#chat-input", "Enter")
    demo_answered(page)
    declined = page.locator("li.msg-bot").first
    questions = check_related(page, declined)

    page.focus("#chat-new")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == questions[0]
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == questions[1]
    page.keyboard.press("Enter")
    demo_answered(page, 2)
    assert page.locator("li.msg-customer").nth(1).inner_text() == questions[1]

    page.reload()
    demo_answered(page, 2)
    assert check_related(page, page.locator("li.msg-bot").first) == questions
