"""While an answer streams, the customer never sees text that is later taken back: in the embeddable widget (on a host
page of another origin) and on the demo page, every text the reply bubble shows is the start of its final text.

The server streams only verified sentences, so an unsupported sentence of the model's must never appear and a draft
the sources do not support at all must give way to the quoted entry without a word of it showing. This checks what the
browser actually renders: a MutationObserver in the page records the bubble's text on every change, so no state is
missed, not even one painted for a few milliseconds.

The bot runs in this process (uvicorn on a thread) with the fake LLM backend, because only then can a test queue what
the model says (FakeEngine.queue_reply): a `support-bot serve` child process (the fake_server fixture) answers every
question with a text derived from it. The fake model writes a word every DELAY_S seconds, as a real one would, so the
verified sentences arrive apart and the bubble goes through several states.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest.pipeline import ingest_path
from support_bot.chat.service import Assistant
from support_bot.chat.store import QUOTE_INTRO
from support_bot.core.config import Settings
from support_bot.core.db import migrate
from support_bot.llm.backends.fake import FakeEngine
from tests.e2e.conftest import CHROMIUM_ARGS
from tests.e2e.widget_support import AppServer, HostSite
from web.app import create_app

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
LIVE = 30_000  # ms: generous for a loaded 2-core machine; waits end as soon as the page shows the thing
DELAY_S = 0.08  # seconds per word of the fake model: a 12-word sentence takes about a second to write

QUESTION = "How long does shipping take?"  # retrieves ship-01 of the demo FAQ
SHIP_01 = (
    "Standard shipping takes 3 to 5 business days within the continental US. Express shipping arrives in 1 to 2 "
    "business days. Orders placed before 2 pm Eastern ship the same day."
)
SUPPORTED = "Standard shipping takes 3 to 5 business days within the continental US [1]."
# Neither sentence below is in any entry; each carries words of its own so that a leak of any part of it is caught.
UNSUPPORTED = "Every parcel also rides in an electric truck driven by a trained penguin named Oscar."
DRAFT = "Drones drop every parcel on your porch within two hours, even on public holidays. Pilots fly at night too."
LEAK_WORDS = ("penguin", "Oscar", "electric", "Drones", "porch", "holidays", "Pilots")


@dataclass(frozen=True)
class Case:
    reply: str  # what the fake model writes
    first_shown: str | None  # the text of the bubble once the first verified sentence is in, if one passes
    quoted: bool  # whether the reply must be the quoted entry


CASES = {
    # The first sentence is supported and streams; the second is not, ends the model's part and never shows.
    "second-sentence-unsupported": Case(
        f"{SUPPORTED} {UNSUPPORTED}",
        first_shown="Standard shipping takes 3 to 5 business days within the continental US.",
        quoted=False,
    ),
    # Nothing of the draft is supported: only the entry, quoted as the help center's text, may ever show.
    "draft-unsupported": Case(DRAFT, first_shown=None, quoted=True),
}


@dataclass
class Bot:
    settings: Settings
    engine: FakeEngine
    server: AppServer
    host: HostSite

    def widget_page(self, name: str) -> str:
        """A page of another origin embedding the widget."""
        html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Host shop</title>'
            f'<script src="{self.server.url}/widget.js" async></script></head>'
            "<body><h1>Outdoor gear</h1></body></html>"
        )
        return self.host.page(f"/{name}.html", html)


@pytest.fixture(scope="module")
def bot(tmp_path_factory, embedder, chromium_path):
    host = HostSite()
    data = tmp_path_factory.mktemp("verified-stream-bot")
    settings = Settings(
        data_dir=data,
        llm={"backend": "fake"},
        migrate_on_start=False,
        # Every page of the module comes from one client IP.
        widget={
            "allowed_origins": [host.origin],
            "conversations_per_ip": 1000,
            "messages_per_ip": 1000,
            "requests_per_ip": 10000,
        },
    )
    migrate(settings)
    job = ingest_path(settings=settings, path=ROOT / "examples" / "demo-faq.csv", source_name="faq")
    assert job.status == "succeeded", job.error
    engine = FakeEngine(delay_s=DELAY_S)
    server = AppServer(create_app(settings, assistant=Assistant(settings, engine=engine))).start()
    yield Bot(settings, engine, server, host)
    server.stop()
    host.stop()


@pytest.fixture(scope="module")
def chromium(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(chromium):
    # A fresh context per test: no conversation carried over in localStorage, one answer per conversation.
    ctx = chromium.new_context(viewport={"width": 1280, "height": 860})
    yield ctx.new_page()
    ctx.close()


# Installed in the page before the question is sent. `log` is the element holding the messages, `bubbles` a selector
# of the bot's reply bubbles and `text` the selector of a bubble's text inside it. On every mutation it pushes the
# newest reply bubble's text; it also keeps each distinct bubble element seen, because the widget renders the stored
# conversation again once an answer is done, and that new bubble is part of what the customer sees too.
OBSERVE_JS = """
([log, bubbles, text]) => {
  window.__states = []; window.__bubbles = [];
  new MutationObserver(() => {
    const all = log.querySelectorAll(bubbles);
    if (!all.length) return;
    const li = all[all.length - 1];
    if (!window.__bubbles.includes(li)) window.__bubbles.push(li);
    window.__states.push(li.querySelector(text).textContent);
  }).observe(log, {subtree: true, childList: true, characterData: true});
}
"""


def normalized(text: str) -> str:
    return " ".join(text.split())


def check_states(states: list[str], final: str, case: Case) -> list[str]:
    """Assert every recorded state is the start of the final text and the case's own expectations; returns the
    distinct states, in order."""
    final_n = normalized(final)
    distinct = list(dict.fromkeys(normalized(s) for s in states))
    for state in distinct:
        assert final_n.startswith(state), f"shown, then replaced:\n  {state!r}\nis not the start of\n  {final_n!r}"
        for word in LEAK_WORDS:
            assert word not in state, f"{word!r} from the model's unverified text was shown: {state!r}"
    shown = [s for s in distinct if s]
    # The test must have watched the answer arrive in pieces, or "every state is a prefix" says nothing.
    assert len(shown) > 1, f"only {distinct!r} was recorded: the answer did not stream"
    assert shown[-1] == final_n, f"the last recorded state {shown[-1]!r} is not the final text {final_n!r}"
    if case.first_shown is not None:
        assert case.first_shown in shown, f"the first verified sentence never showed on its own: {shown!r}"
        assert final_n.startswith(case.first_shown) and not case.quoted
    if case.quoted:
        assert final_n.startswith(QUOTE_INTRO), final_n
        assert normalized(SHIP_01) in final_n, final_n
    return distinct


def queue(bot: Bot, case: Case) -> int:
    bot.engine.queue_reply(case.reply)
    return bot.engine.pieces_streamed


def check_model_wrote(bot: Bot, case: Case, before: int) -> None:
    """The queued reply was the one the model wrote for this answer, not the fake's default reply derived from the
    question (8 words, fewer than either first sentence): at least its whole first sentence was read."""
    first_sentence = case.reply.split(". ")[0]
    assert bot.engine.pieces_streamed - before >= len(first_sentence.split())


@pytest.mark.parametrize("name", list(CASES))
def test_widget_never_replaces_streamed_text(bot, page, name):
    case = CASES[name]
    page.goto(bot.widget_page(f"shop-{name}"))
    page.locator(".launcher").click()
    page.locator(".panel").wait_for(state="visible", timeout=LIVE)
    page.evaluate(
        "args => { const log = document.querySelector('support-bot-widget').shadowRoot.querySelector('.log');"
        f" ({OBSERVE_JS})([log, ...args]); }}",
        ["li[data-role=bot]", ".text"],
    )
    before = queue(bot, case)
    page.locator(".composer textarea").fill(QUESTION)
    page.locator(".composer textarea").press("Enter")
    # Done once the stored conversation was rendered again (a second bubble) and shows its feedback buttons.
    page.wait_for_function(
        """() => window.__bubbles.length >= 2
                 && window.__bubbles[window.__bubbles.length - 1].isConnected
                 && window.__bubbles[window.__bubbles.length - 1].querySelector('.fb')""",
        timeout=LIVE,
    )
    states = page.evaluate("window.__states")
    final = page.locator("li[data-role=bot] .text").last.text_content()
    distinct = check_states(states, final, case)
    check_model_wrote(bot, case, before)
    assert page.locator("li[data-role=bot] .citation").first.get_attribute("data-entry-id") == "ship-01"
    print(f"\nwidget {name}: {len(states)} DOM states recorded, {len(distinct)} distinct: {distinct}")


@pytest.mark.parametrize("name", list(CASES))
def test_demo_page_never_replaces_streamed_text(bot, page, name):
    case = CASES[name]
    page.goto(bot.server.url + "/")
    page.evaluate(
        f"args => ({OBSERVE_JS})([document.getElementById('chat-log'), ...args])", ["li.msg-bot", ".msg-text"]
    )
    before = queue(bot, case)
    page.fill("#chat-input", QUESTION)
    page.press("#chat-input", "Enter")
    # The demo page keeps the streamed bubble: done once it has its message id and stopped streaming.
    answer = page.locator("li.msg-bot[data-id]:not(.streaming)")
    answer.wait_for(timeout=LIVE)
    states = page.evaluate("window.__states")
    final = answer.locator(".msg-text").text_content()
    distinct = check_states(states, final, case)
    check_model_wrote(bot, case, before)
    assert page.evaluate("window.__bubbles.length") == 1
    assert answer.locator(".citation").first.get_attribute("data-entry-id") == "ship-01"
    print(f"\ndemo {name}: {len(states)} DOM states recorded, {len(distinct)} distinct: {distinct}")
