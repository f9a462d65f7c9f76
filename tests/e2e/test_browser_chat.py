"""A customer asks on the demo page and sees a streamed, cited answer that survives a server restart."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import ARTIFACTS

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# Records every text change of the newest bot bubble, so the test can tell streaming from one final write.
WATCH_JS = """
() => {
  window.__botTexts = [];
  const log = document.getElementById('chat-log');
  new MutationObserver(() => {
    const bots = log.querySelectorAll('.msg-bot .msg-text');
    if (bots.length) window.__botTexts.push(bots[bots.length - 1].textContent);
  }).observe(log, {subtree: true, childList: true, characterData: true});
}
"""


def test_demo_page_streams_a_cited_answer_and_keeps_history(server, browser):
    page = browser.new_page()
    page.goto(server.url + "/")
    page.evaluate(WATCH_JS)
    page.fill("#chat-input", "How long does it take to get my refund?")
    page.press("#chat-input", "Enter")
    citation = page.locator(".msg-bot .citation").first
    citation.wait_for(timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "demo-chat.png"), full_page=True)

    assert citation.get_attribute("data-entry-id") == "ret-03"
    link = page.locator(".msg-bot .citation a").first
    assert link.get_attribute("href") == "https://acme.example/help/refunds"
    texts = page.evaluate("window.__botTexts")
    partial = {t for t in texts if t}
    assert len(partial) >= 3, f"answer was not streamed: {texts}"
    answer = page.locator(".msg-bot .msg-text").first.inner_text()
    assert answer.strip()

    server.stop()
    server.start()
    page.reload()
    page.locator(".msg-bot .citation").first.wait_for(timeout=30_000)
    roles = page.locator("#chat-log > li").evaluate_all("els => els.map(e => e.dataset.role)")
    assert roles == ["customer", "bot"]
    assert page.locator(".msg-customer .msg-text").first.inner_text() == "How long does it take to get my refund?"
    assert page.locator(".msg-bot .msg-text").first.inner_text() == answer
    assert page.locator(".msg-bot .citation").first.get_attribute("data-entry-id") == "ret-03"

    # A question the bot declines offers the closest help-center questions; a click asks one and it is answered.
    page.fill("#chat-input", "Can I pay with a credit card?")
    page.press("#chat-input", "Enter")
    offered = page.locator(".msg-bot .msg-related button.ask").first
    offered.wait_for(timeout=60_000)
    assert offered.get_attribute("data-entry-id") == "pay-01"
    assert offered.inner_text() == "Which payment methods do you accept?"
    offered.click()
    page.locator(".msg-bot").nth(2).locator(".citation").first.wait_for(timeout=120_000)
    roles = page.locator("#chat-log > li").evaluate_all("els => els.map(e => e.dataset.role)")
    assert roles == ["customer", "bot"] * 3
    assert page.locator(".msg-customer .msg-text").nth(2).inner_text() == "Which payment methods do you accept?"
    assert page.locator(".msg-bot").nth(2).locator(".citation").first.get_attribute("data-entry-id") == "pay-01"
