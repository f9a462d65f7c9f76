"""Markup typed by one user is text on every server-rendered page another user opens.

Covered elsewhere and not repeated: chat messages, agent names and notes in the widget and the inbox (browser tests in
tests/e2e), knowledge entries (tests/console/test_knowledge_pages.py), analytics and content gaps
(tests/console/test_analytics.py), suggested FAQ entries (tests/console/test_learning.py). Here: user names, the audit
log, and the company and bot names an admin sets in the console, which every page and the widget show.
"""

from __future__ import annotations

from tests.security.conftest import World
from tests.web.console_html import ConsolePage

XSS = "<img src=x onerror=window.__xss=1><script>window.__xss=2</script>"


def html_of(res) -> str:
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/html")
    return res.text


def assert_inert(html: str, *, shown: bool = True) -> None:
    """The payload is there only as escaped text (when the page shows it at all): no element of ours was created."""
    assert XSS not in html and "onerror=window.__xss=1>" not in html and "<script>window.__xss" not in html
    if shown:
        assert "&lt;img src=x onerror=window.__xss=1&gt;" in html


def test_names_and_audit_entries_are_text_on_the_admin_pages(world: World):
    headers = world.use("admin")
    res = world.client.patch(
        f"/api/console/users/{world.users['victim']}", json={"display_name": XSS}, headers=headers
    )
    assert res.status_code == 200, res.text
    users = html_of(world.client.get("/console/users"))
    assert_inert(users)
    # An attribute value, whole: the parser sees the payload as the field's value, not as elements.
    form = ConsolePage(users).form(action=f"/console/users/{world.users['victim']}")
    assert form.fields["display_name"] == XSS
    # The audit page records the change; whether it quotes the new name or not, it never runs it.
    assert_inert(html_of(world.client.get("/console/audit")), shown=False)


def test_company_and_bot_names_set_in_the_console_are_text_everywhere(world: World):
    headers = world.use("admin")
    res = world.client.put(
        "/api/console/settings", json={"chat.company_name": XSS, "chat.bot_name": XSS}, headers=headers
    )
    assert res.status_code == 200, res.text
    for path in ("/console/account", "/console/users", "/console/settings"):
        assert_inert(html_of(world.client.get(path)))
    world.use(None)
    assert_inert(html_of(world.client.get("/")))
    assert_inert(html_of(world.client.get("/console/login")))
    # The widget gets the names as JSON data (it writes them with textContent), exactly as typed.
    config = world.client.get("/api/widget/config").json()
    assert config["company"] == XSS and config["bot_name"] == XSS
