"""The embeddable widget on a host page of another origin, driven in Debian's Chromium.

The bot runs in this process (uvicorn on a thread, the fake LLM backend over the demo FAQ) so that tests can slow its
engine down, act as an agent and read the database; the browser reaches it through a TCP proxy that can drop every
connection at once, like a network failure. The host page comes from a second tiny server and carries hostile CSS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from ingest.pipeline import ingest_path
from support_bot.ops import auth
from support_bot import handoff
from support_bot.chat.service import Assistant
from support_bot.core.security import sign_customer_id
from support_bot.core.config import Settings
from support_bot.core.db import migrate, session_scope
from support_bot.llm.backends.fake import FakeEngine
from support_bot.models import Conversation, Customer, Feedback, Message, User
from tests.e2e.conftest import ARTIFACTS, CHROMIUM_ARGS
from tests.e2e.widget_support import AppServer, HostSite, Proxy
from web.app import create_app

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "widget-test-hmac-secret"
LIVE = 30_000  # ms: generous for a loaded 2-core machine; waits end as soon as the page shows the thing
REFUND_Q = "How long does it take to get my refund?"
REFUND_URL = "https://acme.example/help/refunds"

# Knowledge whose text tries to run script in the widget; the url column only takes http(s) links.
XSS_FAQ = (
    "id,question,answer,url\n"
    'xss-01,"What is the <img src=x onerror=""window.__xss=1""> gadget code?",'
    '"The gadget code is **GADGET-42** <img src=x onerror=""window.__xss=2""><script>window.__xss=3</script>. '
    '[Open it](javascript:window.__xss=4) or read https://acme.example/help/gadgets for details.",'
    "https://acme.example/help/gadgets\n"
)
XSS_AGENT = (
    '<img src=x onerror="window.__xss=5"><script>window.__xss=6</script> **Hi**, I am Alice.\n\n'
    "- check the `order id`\n- then [see here](https://acme.example/help/orders)"
)

# The host site's own CSS tries its worst on everything, the widget's element included.
HOSTILE_CSS = """
* { font-size: 40px !important; color: rgb(255, 0, 0) !important; line-height: 3 !important;
    letter-spacing: 6px !important; box-sizing: content-box !important; }
div, section, ol, li, form, textarea, button, svg { display: none !important; visibility: hidden !important; }
support-bot-widget { display: none !important; position: static !important; opacity: 0 !important; }
#host-button { display: inline-block !important; visibility: visible !important; }
"""


@dataclass
class Site:
    settings: Settings
    engine: FakeEngine
    server: AppServer
    proxy: Proxy
    host: HostSite
    other_host: HostSite

    def page_url(self, name: str, *, attrs: str = "", host: HostSite | None = None, hostile: bool = True) -> str:
        """A host page embedding the widget (through the proxy) with these data attributes."""
        style = f"<style>{HOSTILE_CSS}</style>" if hostile else ""
        html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><title>Host shop</title>'
            f'<script src="{self.proxy.url}/widget.js" async {attrs}></script>{style}</head>'
            '<body><h1 id="host-title">Outdoor gear</h1><p id="host-text">Welcome to our shop.</p>'
            '<button id="host-button" type="button">Host button</button></body></html>'
        )
        return (host or self.host).page(f"/{name}.html", html)


@pytest.fixture(scope="module")
def site(tmp_path_factory, embedder, chromium_path):
    host, other_host = HostSite(), HostSite()
    data = tmp_path_factory.mktemp("widget-bot")
    settings = Settings(
        data_dir=data,
        llm={"backend": "fake"},
        customer_hmac_secret=SECRET,
        migrate_on_start=False,
        widget={
            "allowed_origins": [host.origin],
            # The whole module shares one client IP; only the rate-limit test tightens a limit.
            "conversations_per_ip": 1000,
            "messages_per_ip": 1000,
            "requests_per_ip": 10000,
        },
    )
    migrate(settings)
    for path, name in ((ROOT / "examples" / "demo-faq.csv", "faq"), (data / "gadgets.csv", "gadgets")):
        if name == "gadgets":
            path.write_text(XSS_FAQ, encoding="utf-8")
        job = ingest_path(settings=settings, path=path, source_name=name)
        assert job.status == "succeeded", job.error
    engine = FakeEngine(delay_s=0.05)
    app = create_app(settings, assistant=Assistant(settings, engine=engine))
    server = AppServer(app).start()
    proxy = Proxy(server.port)
    yield Site(settings, engine, server, proxy, host, other_host)
    proxy.close()
    server.stop()
    host.stop()
    other_host.stop()


@pytest.fixture(scope="module")
def chromium(chromium_path):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(chromium):
    ctx = chromium.new_context(viewport={"width": 1280, "height": 860})
    # Citation links point at the (unreachable) company site: answer them here so a click can be followed.
    ctx.route(
        "https://acme.example/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body="<title>Acme help</title>help page"),
    )
    yield ctx
    ctx.close()


def shadow(page, script: str):
    """Evaluate `script` (a function of the widget's shadow root) in the page."""
    return page.evaluate(f"() => {{ const root = document.querySelector('support-bot-widget').shadowRoot; "
                         f"return ({script})(root); }}")


def open_widget(page):
    page.locator(".launcher").click()
    page.locator(".panel").wait_for(state="visible", timeout=LIVE)


def ask(page, text: str) -> None:
    page.locator(".composer textarea").fill(text)
    page.locator(".composer textarea").press("Enter")


def wait_answered(page, count: int = 1):
    """Wait until `count` stored bot answers are shown, and nothing is streaming."""
    page.wait_for_function(
        """n => { const r = document.querySelector('support-bot-widget').shadowRoot;
                  return r.querySelectorAll('li[data-role=bot][data-id] .fb').length >= n
                         && !r.querySelector('.streaming'); }""",
        arg=count,
        timeout=LIVE,
    )


def roles(page) -> list[str]:
    return shadow(page, "r => Array.from(r.querySelectorAll('.log > li')).map(li => li.dataset.role)")


def conversation_id(page) -> str:
    return page.evaluate(
        "() => JSON.parse(localStorage.getItem(Object.keys(localStorage).find(k => k.startsWith('support-bot-widget:')"
        " && !k.endsWith(':open')))).id"
    )


def stored(site: Site, conv_id: str) -> list[Message]:
    with session_scope(site.settings) as session:
        rows = list(session.scalars(select(Message).where(Message.conversation_id == conv_id).order_by(Message.seq)))
        session.expunge_all()
    return rows


# Records each text of the newest bot bubble and each connection note, to tell streaming and recovery apart.
WATCH_JS = """
() => {
  window.__botTexts = []; window.__notes = []; window.__spoken = [];
  const root = document.querySelector('support-bot-widget').shadowRoot;
  const log = root.querySelector('.log');
  // Everything the live region says, in order: announcements follow each other faster than a poll could see.
  const live = root.querySelector('[aria-live=polite]');
  new MutationObserver(() => { if (live.textContent) window.__spoken.push(live.textContent); })
    .observe(live, {subtree: true, childList: true, characterData: true});
  new MutationObserver(() => {
    const bots = log.querySelectorAll('li[data-role=bot] .text');
    if (bots.length) window.__botTexts.push(bots[bots.length - 1].textContent);
    for (const n of log.querySelectorAll('.state')) window.__notes.push(n.textContent);
  }).observe(log, {subtree: true, childList: true, characterData: true});
}
"""

NO_SCRIPT_RAN = """
() => {
  const root = document.querySelector('support-bot-widget').shadowRoot;
  return {
    flag: window.__xss === undefined ? null : window.__xss,
    imgs: root.querySelectorAll('img:not(.avatar)').length + document.querySelectorAll('img').length,
    scripts: root.querySelectorAll('script').length,
    jsLinks: Array.from(root.querySelectorAll('a')).filter(a => !/^https?:/.test(a.href)).length,
  };
}
"""


def test_widget_on_another_site_streams_a_cited_answer_and_stores_thumbs(site, context):
    page = context.new_page()
    page.goto(site.page_url("shop"))
    launcher = page.locator(".launcher")
    launcher.wait_for(state="visible", timeout=LIVE)

    # The host's CSS does not reach into the widget, and the widget leaves the host's styles alone.
    looks = shadow(page, """r => { const s = getComputedStyle(r.querySelector('.launcher'));
        const h = getComputedStyle(r.host);
        return {font: s.fontSize, display: s.display, color: s.color, hostPos: h.position, hostOpacity: h.opacity}; }""")
    assert looks["font"] != "40px" and looks["display"] == "flex" and looks["color"] == "rgb(255, 255, 255)", looks
    assert looks["hostPos"] == "fixed" and looks["hostOpacity"] == "1", looks
    host_text = page.evaluate("""() => { const s = getComputedStyle(document.getElementById('host-text'));
        return {font: s.fontSize, color: s.color, sheets: document.styleSheets.length}; }""")
    assert host_text == {"font": "40px", "color": "rgb(255, 0, 0)", "sheets": 1}

    open_widget(page)
    assert launcher.get_attribute("aria-expanded") == "true"
    assert page.locator(".title").inner_text() == "Acme support"
    assert "Ask me anything" in page.locator("li[data-role=greeting]").inner_text()
    page.evaluate(WATCH_JS)
    ask(page, REFUND_Q)
    wait_answered(page)
    page.screenshot(path=str(ARTIFACTS / "widget-open.png"))

    partial = {t for t in page.evaluate("window.__botTexts") if t}
    assert len(partial) >= 3, f"the answer was not streamed: {partial}"
    assert roles(page) == ["greeting", "customer", "bot"]
    citation = page.locator("li[data-role=bot] .citation").first
    assert citation.get_attribute("data-entry-id") == "ret-03"
    source = citation.locator("a")
    assert source.get_attribute("href") == REFUND_URL
    assert source.get_attribute("rel") == "noopener noreferrer nofollow"
    assert "5 business days" in page.locator("li[data-role=bot] .text").inner_text()
    with context.expect_page() as opened:
        source.click()
    assert opened.value.url == REFUND_URL
    opened.value.close()
    # The live region carries the answer for screen readers, a sentence at a time.
    page.wait_for_function("() => window.__spoken.some(t => t.includes('business days'))", timeout=LIVE)

    conv_id = conversation_id(page)
    answer = page.locator("li[data-role=bot]").first
    up = answer.locator(".fb button[data-rating=up]")
    up.click()
    page.locator("li[data-role=bot] .fb", has_text="Thanks for your feedback").wait_for(timeout=LIVE)
    assert up.get_attribute("aria-pressed") == "true"
    with session_scope(site.settings) as session:
        feedback = session.scalars(
            select(Feedback).join(Message, Feedback.message_id == Message.id).where(Message.conversation_id == conv_id)
        ).all()
        assert [(f.message_id, f.rating) for f in feedback] == [(answer.get_attribute("data-id"), "up")]


def test_the_launcher_waits_for_the_sites_own_look_and_never_shows_the_defaults_first(site, context):
    page = context.new_page()
    held = []
    page.route("**/api/widget/config", lambda route: held.append((route, route.fetch())))
    page.goto(site.page_url("slow-config"))
    page.wait_for_function("() => document.querySelector('support-bot-widget') !== null", timeout=LIVE)
    deadline = LIVE / 1000
    while not held and deadline > 0:
        page.wait_for_timeout(100)
        deadline -= 0.1
    assert held, "the widget did not ask for its configuration"
    launcher = page.locator(".launcher")
    assert not launcher.is_visible()  # the configuration has not arrived: nothing to show yet
    for route, response in held:
        route.fulfill(response=response)
    launcher.wait_for(state="visible", timeout=LIVE)
    open_widget(page)
    assert page.locator(".title").inner_text() == "Acme support"


def claim_as_new_agent(settings: Settings, conv_id: str, name: str, display_name: str) -> str:
    """A new agent, online, who claims the conversation; returns the agent's id."""
    with session_scope(settings) as session:
        agent, _ = auth.create_user(
            session, settings=settings, username=f"{name}{conv_id[:6]}", role="agent", password="correct horse battery",
            display_name=display_name, must_change_password=False,
        )
        agent_id = agent.id
    with session_scope(settings) as session:
        handoff.set_presence(session, settings, agent=session.get(User, agent_id), status="online")
    with session_scope(settings) as session:
        handoff.claim(session, settings, conversation_id=conv_id, agent=session.get(User, agent_id))
    return agent_id


def test_handoff_shows_the_queue_and_an_inert_agent_message_then_the_rating_is_stored(site, context):
    page = context.new_page()
    page.goto(site.page_url("shop"))
    open_widget(page)
    page.locator(".chip", has_text="Talk to a person").click()
    banner = page.locator(".banner")
    # Nobody is online: no place in a queue, only the offer to leave a message for an e-mail answer.
    banner.filter(has_text="Leave a message below").wait_for(timeout=LIVE)
    assert not re.search(r"in the queue|Connecting you", banner.inner_text()), banner.inner_text()
    page.locator("form.offline").wait_for(state="visible", timeout=LIVE)
    conv_id = conversation_id(page)

    settings = site.settings
    agent_id = claim_as_new_agent(settings, conv_id, "alice", "Alice Agent")
    page.locator("li[data-role=notice]", has_text="Alice Agent joined the chat.").wait_for(timeout=LIVE)
    with session_scope(settings) as session:
        handoff.agent_reply(session, settings, conversation_id=conv_id, agent=session.get(User, agent_id), text=XSS_AGENT)
    reply = page.locator("li[data-role=agent]")
    reply.wait_for(timeout=LIVE)
    assert reply.locator(".author").inner_text() == "Alice Agent"
    assert '<img src=x onerror="window.__xss=5"><script>window.__xss=6</script>' in reply.locator(".text").inner_text()
    assert reply.locator(".text strong").inner_text() == "Hi"
    assert reply.locator(".text ul > li").count() == 2
    assert reply.locator(".text li code").inner_text() == "order id"
    assert reply.locator(".text li a").get_attribute("href") == "https://acme.example/help/orders"
    assert page.evaluate(NO_SCRIPT_RAN) == {"flag": None, "imgs": 0, "scripts": 0, "jsLinks": 0}

    with session_scope(settings) as session:
        handoff.resolve(session, settings, conversation_id=conv_id, agent=session.get(User, agent_id))
    form = page.locator("form.rating")
    form.wait_for(state="visible", timeout=LIVE)
    form.locator("button[data-rating='4']").click()
    assert form.locator("button[data-rating='4']").get_attribute("aria-checked") == "true"
    form.locator("input").fill("Quick and kind")
    form.locator("button[type=submit]").click()
    banner.filter(has_text="Thank you for rating").wait_for(timeout=LIVE)
    with session_scope(settings) as session:
        conv = session.get(Conversation, conv_id)
        assert (conv.rating, conv.rating_comment) == (4, "Quick and kind")


def test_a_history_read_overtaken_by_a_live_agent_message_does_not_take_it_away(site, context):
    # The agent's claim makes the widget read the stored history; that read is answered before the agent's reply is
    # stored and reaches the page only after the reply came live. The customer keeps reading the reply.
    page = context.new_page()
    page.goto(site.page_url("race"))
    open_widget(page)
    page.locator(".chip", has_text="Talk to a person").click()
    # Whoever else is online from earlier tests, the chat is waiting for a person now.
    page.locator(".banner").filter(has_text=re.compile("Leave a message below|in the queue")).wait_for(timeout=LIVE)
    conv_id = conversation_id(page)
    held, holding = [], [True]

    def hold_reads(route):
        if route.request.method != "GET" or not holding[0]:
            return route.continue_()
        held.append((route, route.fetch()))  # the server answers now; the page gets it when the test says

    page.route("**/messages", hold_reads)
    settings = site.settings
    agent_id = claim_as_new_agent(settings, conv_id, "bob", "Bob Agent")
    page.locator("li[data-role=notice]", has_text="Bob Agent joined the chat.").wait_for(timeout=LIVE)
    deadline = LIVE / 1000
    while not held and deadline > 0:
        page.wait_for_timeout(100)
        deadline -= 0.1
    assert held, "the claim did not make the widget read the history"
    with session_scope(settings) as session:
        handoff.agent_reply(session, settings, conversation_id=conv_id, agent=session.get(User, agent_id),
                            text="Hello, I can see your order.")
    reply = page.locator("li[data-role=agent]")
    reply.wait_for(timeout=LIVE)
    shown = reply.element_handle()
    holding[0] = False
    for route, response in held:
        route.fulfill(response=response)
    # The stale read is drawn (the log is rebuilt, so the shown bubble is replaced) and the reply is still there.
    page.wait_for_function("el => !el.isConnected", arg=shown, timeout=LIVE)
    assert reply.count() == 1
    assert reply.locator(".author").inner_text() == "Bob Agent"
    assert reply.locator(".text").inner_text() == "Hello, I can see your order."
    with session_scope(settings) as session:
        handoff.resolve(session, settings, conversation_id=conv_id, agent=session.get(User, agent_id))
    with session_scope(settings) as session:
        handoff.set_presence(session, settings, agent=session.get(User, agent_id), status="offline")


def test_reload_keeps_the_conversation_and_tabs_share_it(site, context):
    first = context.new_page()
    first.goto(site.page_url("shop"))
    open_widget(first)
    ask(first, REFUND_Q)
    wait_answered(first)
    conv_id = conversation_id(first)

    # A second tab of the same site shows the same conversation, and what it adds appears in the first tab.
    second = context.new_page()
    second.goto(site.page_url("shop"))
    open_widget(second)
    wait_answered(second)
    assert roles(second) == ["greeting", "customer", "bot"]
    ask(second, "How much does shipping cost?")
    wait_answered(second, 2)
    wait_answered(first, 2)
    assert roles(first) == ["greeting", "customer", "bot", "customer", "bot"]

    first.reload()
    first.locator(".panel").wait_for(state="visible", timeout=LIVE)  # it was open: it stays open
    wait_answered(first, 2)
    ids = shadow(first, "r => Array.from(r.querySelectorAll('.log > li[data-id]')).map(li => li.dataset.id)")
    assert ids == [m.id for m in stored(site, conv_id)]
    assert first.locator("li[data-role=customer]").first.inner_text() == REFUND_Q
    assert "Refunds are issued" in first.locator("li[data-role=bot]").first.inner_text()

    # "New conversation" starts afresh in every tab; the next message opens a new conversation.
    first.locator("button[aria-label='Start a new conversation']").click()
    assert roles(first) == ["greeting"]
    second.wait_for_function(
        "() => document.querySelector('support-bot-widget').shadowRoot.querySelectorAll('.log > li').length === 1"
    )
    ask(second, "How much does shipping cost?")
    wait_answered(second)
    assert conversation_id(second) != conv_id
    wait_answered(first)
    assert roles(first) == ["greeting", "customer", "bot"]


def test_a_connection_dropped_mid_answer_recovers_without_losing_or_duplicating(site, context):
    page = context.new_page()
    page.goto(site.page_url("shop"))
    open_widget(page)
    page.evaluate(WATCH_JS)
    # An answer whose sentences the sources support, so they stream at the model's pace: the drop comes after the
    # first verified sentence is shown and before the answer is over.
    site.server.app.state.assistant.wait_background()
    site.engine.queue_reply(
        "Refunds are issued to your original payment method within 5 business days after we receive the return [1]. "
        "Your bank may take another 2 to 3 days to show it."
    )
    site.engine.delay_s = 0.4
    try:
        ask(page, REFUND_Q)
        page.wait_for_function(
            """() => { const r = document.querySelector('support-bot-widget').shadowRoot;
                       const s = r.querySelector('li.streaming .text');
                       return s && s.textContent.split(' ').length >= 3; }""",
            timeout=LIVE,
        )
        assert site.proxy.cut() > 0
        wait_answered(page)
    finally:
        site.engine.delay_s = 0.05
    assert any("Reconnecting" in n for n in page.evaluate("window.__notes")), "the widget never saw the drop"
    assert roles(page) == ["greeting", "customer", "bot"]
    rows = stored(site, conversation_id(page))
    assert [(m.role, m.text) for m in rows][:1] == [("customer", REFUND_Q)]
    assert [m.role for m in rows] == ["customer", "bot"]
    assert rows[1].reply_to_id == rows[0].id
    assert page.locator("li[data-role=bot]").get_attribute("data-id") == rows[1].id
    assert "Refunds are issued" in page.locator("li[data-role=bot] .text").inner_text()

    # The stop button ends an answer midway; the widget is ready for the next question at once.
    site.server.app.state.assistant.wait_background()
    site.engine.queue_reply(
        "Standard shipping is free on orders over $50; below that it costs $5.95 [1]. "
        "Express shipping costs $14.95 on any order, and it is the fastest way to get your gear."
    )
    site.engine.delay_s = 0.4
    try:
        ask(page, "How much does shipping cost?")
        stop = page.locator("button[aria-label='Stop the answer']")
        stop.wait_for(state="visible", timeout=LIVE)
        page.wait_for_function(
            "() => document.querySelector('support-bot-widget').shadowRoot.querySelector('li.streaming .text')"
            ".textContent.length > 0",
            timeout=LIVE,
        )
        stop.click()
        page.locator("li[data-role=bot] .state", has_text="Stopped.").wait_for(timeout=LIVE)
    finally:
        site.engine.delay_s = 0.05
    assert page.locator("button[aria-label=Send]").is_visible() and not stop.is_visible()
    assert not page.locator("li.streaming").count()


def test_knowledge_and_bot_text_with_markup_is_shown_inert(site, context):
    page = context.new_page()
    page.goto(site.page_url("shop"))
    open_widget(page)
    # Background work of earlier tests (summaries) must not take the reply queued below.
    site.server.app.state.assistant.wait_background()
    # The model "answers" with the entry's markup word for word (so grounding keeps it); the citation's title is the
    # entry's question, markup included.
    site.engine.queue_reply(
        "The gadget code is **GADGET-42** <img src=x onerror=\"window.__xss=2\"><script>window.__xss=3</script>. "
        "[Open it](javascript:window.__xss=4) or read https://acme.example/help/gadgets for details. [1]"
    )
    ask(page, "What is the gadget code?")
    wait_answered(page)
    bot = page.locator("li[data-role=bot]")
    text = bot.locator(".text").inner_text()
    assert '<img src=x onerror="window.__xss=2"><script>window.__xss=3</script>' in text
    assert "[Open it](javascript:window.__xss=4)" in text
    assert bot.locator(".text strong").inner_text() == "GADGET-42"
    assert bot.locator(".text a", has_text="https://acme.example/help/gadgets").get_attribute("href") == (
        "https://acme.example/help/gadgets"
    )
    citation = bot.locator(".citation")
    assert citation.get_attribute("data-entry-id") == "xss-01"
    assert '<img src=x onerror="window.__xss=1">' in citation.inner_text()
    assert page.evaluate(NO_SCRIPT_RAN) == {"flag": None, "imgs": 0, "scripts": 0, "jsLinks": 0}


def test_phone_width_layout(site, chromium):
    ctx = chromium.new_context(viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True)
    try:
        page = ctx.new_page()
        page.goto(site.page_url("shop"))
        open_widget(page)
        ask(page, REFUND_Q)
        wait_answered(page)
        box = page.locator(".panel").bounding_box()
        assert box["x"] >= 0 and box["y"] >= 0
        assert box["x"] + box["width"] <= 375 and box["y"] + box["height"] <= 667
        assert box["width"] >= 370 and box["height"] >= 600, box  # the panel takes the screen
        composer = page.locator(".composer").bounding_box()
        assert composer["y"] + composer["height"] <= 667
        assert not page.locator(".launcher").is_visible()  # the close button is in the header instead
        page.screenshot(path=str(ARTIFACTS / "widget-phone.png"))
        page.locator("button[aria-label='Close chat']").tap()
        page.locator(".launcher").wait_for(state="visible", timeout=LIVE)
    finally:
        ctx.close()


def test_keyboard_only(site, context):
    page = context.new_page()
    page.goto(site.page_url("shop"))
    page.locator(".launcher").wait_for(state="visible", timeout=LIVE)
    focused = "() => { const h = document.activeElement; return h && h.shadowRoot && h.shadowRoot.activeElement ? " \
              "h.shadowRoot.activeElement.className : (h ? h.id : null); }"
    for _ in range(5):
        page.keyboard.press("Tab")
        if page.evaluate(focused) == "launcher":
            break
    assert page.evaluate(focused) == "launcher"
    launcher = page.locator(".launcher")
    assert launcher.get_attribute("aria-label") == "Open chat: Chat with us"
    page.keyboard.press("Enter")
    page.locator(".panel").wait_for(state="visible", timeout=LIVE)
    assert shadow(page, "r => r.activeElement.getAttribute('aria-label')") == "Your message"
    page.keyboard.type("How much does shipping cost?")
    page.keyboard.press("Enter")
    wait_answered(page)
    assert shadow(page, "r => r.activeElement.getAttribute('aria-label')") == "Your message"
    page.keyboard.press("Escape")
    page.locator(".panel").wait_for(state="hidden", timeout=LIVE)
    assert page.evaluate(focused) == "launcher"
    assert launcher.get_attribute("aria-expanded") == "false"
    for name in ("Close chat", "Start a new conversation", "Send", "Your message", "Helpful", "Not helpful"):
        assert shadow(page, f"r => r.querySelectorAll('[aria-label=\"{name}\"]').length") >= 1, name


def test_identified_customers_and_refusals_are_explained(site, context):
    # A correctly signed customer id: the conversation belongs to that customer. The page also sets its own looks.
    page = context.new_page()
    signature = sign_customer_id("cust-42", SECRET)
    page.goto(site.page_url(
        "signed",
        attrs=f'data-customer-id="cust-42" data-customer-signature="{signature}" data-color="#0a7d32" '
              'data-position="left" data-title="Outdoor help" data-launcher-label="Questions?"',
    ))
    open_widget(page)
    assert page.locator(".title").inner_text() == "Outdoor help"
    assert page.locator(".launcher").get_attribute("aria-label") == "Close chat: Questions?"
    assert shadow(page, "r => getComputedStyle(r.querySelector('.launcher')).backgroundColor") == "rgb(10, 125, 50)"
    assert page.locator(".launcher").bounding_box()["x"] < 100  # on the left
    ask(page, "How much does shipping cost?")
    wait_answered(page)
    with session_scope(site.settings) as session:
        conv = session.get(Conversation, conversation_id(page))
        assert session.get(Customer, conv.customer_id).external_id == "cust-42"

    # A tampered signature: a clear error, nothing created, the typed text kept.
    page = context.new_page()
    page.goto(site.page_url("tampered", attrs=f'data-customer-id="cust-43" data-customer-signature="{signature}"'))
    open_widget(page)
    ask(page, "Where is my order?")
    banner = page.locator(".banner.err")
    banner.wait_for(timeout=LIVE)
    assert "could not confirm who you are" in banner.inner_text()
    assert "signature does not match" in banner.inner_text()
    assert page.locator(".composer textarea").input_value() == "Where is my order?"
    assert roles(page) == ["greeting"]

    # A customer id without its signature: said plainly, before anything is sent.
    page = context.new_page()
    page.goto(site.page_url("unsigned", attrs='data-customer-id="cust-44"'))
    open_widget(page)
    page.locator(".banner.err", has_text="without its signature").wait_for(timeout=LIVE)

    # Over the per-conversation limit: a friendly message with the wait, and the widget keeps working.
    page = context.new_page()
    page.goto(site.page_url("shop"))
    open_widget(page)
    limits = site.settings.widget
    before = limits.messages_per_conversation
    limits.messages_per_conversation = 1
    try:
        ask(page, "How much does shipping cost?")
        wait_answered(page)
        ask(page, "Do you ship internationally?")
        banner = page.locator(".banner.err")
        banner.wait_for(timeout=LIVE)
        assert re.search(r"faster than we can handle\. Please wait \d+ seconds", banner.inner_text()), banner.inner_text()
        assert page.locator(".composer textarea").input_value() == "Do you ship internationally?"
        assert roles(page) == ["greeting", "customer", "bot"]
    finally:
        limits.messages_per_conversation = before
    # Once the limit allows it again, the kept text goes out with one more Enter.
    page.locator(".composer textarea").press("Enter")
    wait_answered(page, 2)
    assert roles(page) == ["greeting", "customer", "bot", "customer", "bot"]


def test_loading_never_blocks_the_host_page_and_other_sites_are_refused(site, context):
    page = context.new_page()
    site.proxy.hold()
    try:
        page.goto(site.page_url("slow"), wait_until="commit")
        # The page paints while widget.js is still on its way.
        page.wait_for_function("() => performance.getEntriesByName('first-contentful-paint').length > 0", timeout=LIVE)
        assert page.locator("#host-text").is_visible()
        assert page.evaluate("() => document.querySelector('support-bot-widget')") is None
    finally:
        site.proxy.release()
    page.locator(".launcher").wait_for(state="visible", timeout=LIVE)

    # A site that is not in allowed_origins gets the launcher but no chat: the browser withholds the API (CORS).
    page = context.new_page()
    page.goto(site.page_url("elsewhere", host=site.other_host, hostile=False))
    open_widget(page)
    page.locator(".banner.err", has_text="not available on this site").wait_for(timeout=LIVE)


def test_a_declined_question_offers_related_questions_that_ask_themselves(site, context):
    page = context.new_page()
    page.goto(site.page_url("shop"))
    open_widget(page)
    ask(page, "Can I pay with a credit card?")
    wait_answered(page)
    declined = page.locator("li[data-role=bot]").first
    assert "may be related" in declined.inner_text()
    offered = declined.locator("button.ask")
    assert offered.first.get_attribute("data-entry-id") == "pay-01"
    assert offered.first.inner_text() == "Which payment methods do you accept?"
    assert declined.locator(".citation").count() == 0

    # A click asks that question: it is sent as the customer's next message and answered from its entry.
    offered.first.click()
    wait_answered(page, 2)
    assert roles(page) == ["greeting", "customer", "bot", "customer", "bot"]
    assert page.locator("li[data-role=customer]").nth(1).inner_text() == "Which payment methods do you accept?"
    assert page.locator("li[data-role=bot]").nth(1).locator(".citation").first.get_attribute("data-entry-id") == "pay-01"
    conv_id = conversation_id(page)
    rows = stored(site, conv_id)
    assert [m.abstained for m in rows if m.role == "bot"] == [True, False]
    assert rows[1].related[0]["entry_id"] == "pay-01"

    # After a reload the stored reply still offers its questions as buttons.
    page.reload()
    page.locator(".panel").wait_for(state="visible", timeout=LIVE)
    wait_answered(page, 2)
    assert page.locator("li[data-role=bot]").first.locator("button.ask").first.inner_text() == (
        "Which payment methods do you accept?"
    )


def test_a_site_not_allowed_gets_a_console_error_naming_the_setting(site, context):
    # Whoever embeds the widget on a site the server does not allow is told, in the page's console, what to change.
    page = context.new_page()
    setting = "SUPPORT_BOT_WIDGET__ALLOWED_ORIGINS"
    with page.expect_console_message(lambda m: setting in m.text, timeout=LIVE) as message:
        page.goto(site.page_url("refused", host=site.other_host, hostile=False))
    assert message.value.type == "error"
    assert site.other_host.origin in message.value.text and site.proxy.url in message.value.text
    # The customer is only told that the chat is not available here.
    open_widget(page)
    page.locator(".banner.err", has_text="not available on this site").wait_for(timeout=LIVE)
    assert setting not in page.locator(".panel").inner_text()

    # An allowed site loads its config and logs nothing of the kind.
    page = context.new_page()
    said: list[str] = []
    page.on("console", lambda m: said.append(m.text))
    page.goto(site.page_url("allowed"))
    open_widget(page)
    assert page.locator(".title").inner_text() == "Acme support"
    page.wait_for_timeout(500)
    assert not [t for t in said if setting in t], said


def test_an_automatic_handoff_with_nobody_online_says_once_what_happens_next(site, context):
    with session_scope(site.settings) as session:
        for user in session.scalars(select(User)):
            user.presence = "offline"
    page = context.new_page()
    page.goto(site.page_url("nobody-online"))
    open_widget(page)
    ask(page, "I want to talk to a real person please")
    banner, panel = page.locator(".banner"), page.locator(".panel")
    banner.filter(has_text="Leave a message below").wait_for(timeout=LIVE)
    page.locator("form.offline").wait_for(state="visible", timeout=LIVE)
    # The bot's own reply explains; the header names the state and the banner says what happens next, nothing else.
    assert "no one from our team is online" in page.locator("li[data-role=bot]").last.inner_text()
    assert page.locator(".sub").inner_text() == "Our team is offline"
    assert banner.inner_text() == "Leave a message below and we will answer by e-mail."
    text = panel.inner_text()
    assert "in the queue" not in text and "Connecting you" not in text and "Waiting for a person" not in text, text
    page.screenshot(path=str(ARTIFACTS / "widget-nobody-online.png"))

    form = page.locator("form.offline")
    form.locator("textarea").fill("My parcel never arrived")
    form.locator("input[type=email]").fill("sam@example.com")
    form.locator("button[type=submit]").click()
    banner.filter(has_text="We will answer by e-mail").wait_for(timeout=LIVE)
    form.wait_for(state="hidden", timeout=LIVE)
    assert banner.inner_text() == "Thanks! We will answer by e-mail."
    assert page.locator(".sub").inner_text() == "Message received"
    text = panel.inner_text()
    assert "Connecting you" not in text and "in the queue" not in text and "Leave a message below" not in text, text
    with session_scope(site.settings) as session:
        assert session.get(Conversation, conversation_id(page)).contact_email == "sam@example.com"
