"""Ops in the browser: upload a CSV, a PDF and a broken PDF at once, watch the jobs, then ask the knowledge base.

The server runs the fake LLM backend: the story is about ingestion and the tester's view of retrieval, not about the
model's wording, and the fake keeps it fast. Ingestion and retrieval are real (embedding model, FAISS, BM25).
"""

from __future__ import annotations

import re

import pytest

from support_bot.core.config import Settings
from tests.conftest import PASSWORD, add_user
from tests.e2e.conftest import ARTIFACTS, Server
from tests.ingest.test_pdf_loader import _content, make_pdf

pytestmark = [pytest.mark.slow, pytest.mark.browser]

LIVE = 60_000  # ms: generous for a loaded 2-core machine; each wait ends as soon as the page shows the thing
XSS = "<img src=x onerror=window.__xss=1>"
CSV = (
    "id,question,answer\n"
    "gift-01,Can I buy a gift card?,Gift cards come in amounts from $10 to $500 and never expire.\n"
    "gift-02,How do I redeem a gift card?,Enter the gift card code at checkout under Payment.\n"
    f'gift-03,"Where is my gift card balance? {XSS}",Sign in and open Wallet to see the balance of every card.\n'
).encode()
MANUAL = make_pdf([
    _content([
        "Trail scooter manual", "Folding the scooter", "Press the red lever and fold the stem down until it clicks."
    ]),
    _content(["Tyre pressure", "Keep both tyres at 50 psi for the best range."]),
])
BROKEN = MANUAL[: len(MANUAL) // 2]


def create_ops_user(server: Server) -> None:
    add_user(Settings(data_dir=server.data_dir), "olga", "ops")


def test_ops_uploads_files_at_once_watches_the_jobs_and_asks_the_knowledge_base(fake_server, browser):
    server = fake_server
    create_ops_user(server)
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url + "/console/login?next=/console/knowledge")
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url("**/console/knowledge")

    # Three files in one selection: a FAQ table, a PDF manual and a PDF cut in half.
    page.set_input_files("#upload-files", [
        {"name": "gift-cards.csv", "mimeType": "text/csv", "buffer": CSV},
        {"name": "scooter-manual.pdf", "mimeType": "application/pdf", "buffer": MANUAL},
        {"name": "broken-manual.pdf", "mimeType": "application/pdf", "buffer": BROKEN},
    ])
    with page.expect_response(lambda r: r.url.endswith("/api/knowledge/uploads")) as upload:
        page.click("#upload-submit")
    assert upload.value.status == 202, upload.value.text()
    page.locator("#kb-notice").filter(has_text="3 files uploaded; 1 refused").wait_for(timeout=LIVE)

    jobs = page.locator("#jobs-table tbody tr.job")
    for filename in ("gift-cards.csv", "scooter-manual.pdf"):
        row = jobs.filter(has=page.locator("td.job-file", has_text=filename))
        row.and_(page.locator("[data-status=succeeded]")).wait_for(timeout=LIVE)
        bar = row.locator("td.job-progress progress")
        assert bar.is_visible()
        assert bar.get_attribute("value") == bar.get_attribute("max")
        done, total = row.locator(".job-count").inner_text().split(" / ")
        assert done == total and int(total) > 0
    broken = jobs.filter(has=page.locator("td.job-file", has_text="broken-manual.pdf"))
    assert broken.get_attribute("data-status") == "failed"
    assert "broken-manual.pdf: the PDF is truncated or damaged" in broken.locator("td.job-error").inner_text()

    # A later upload that is refused outright: its error replaces the earlier "uploaded" notice, not joins it.
    page.set_input_files("#upload-files", [
        {"name": "notes.exe", "mimeType": "application/octet-stream", "buffer": b"MZ not knowledge"},
    ])
    with page.expect_response(lambda r: r.url.endswith("/api/knowledge/uploads")) as refused:
        page.click("#upload-submit")
    assert refused.value.status == 422, refused.value.text()
    error = page.locator("#kb-error")
    error.wait_for(state="visible", timeout=LIVE)
    assert refused.value.json()["detail"] in error.inner_text()
    assert page.locator("#kb-notice").is_hidden() and page.locator("#kb-notice").inner_text() == ""

    # The sources list, redrawn when the jobs finished, shows both with their entry counts as the API has them.
    api_sources = {s["name"]: s for s in page.request.get(server.url + "/api/knowledge/sources").json()["sources"]}
    assert api_sources["gift-cards"]["entries"] == 3 and api_sources["scooter-manual"]["entries"] == 2
    for name in ("gift-cards", "scooter-manual"):
        row = page.locator(f"#sources-table tr.source[data-source='{name}']")
        row.and_(page.locator("[data-status=live]")).wait_for(timeout=LIVE)
        assert row.locator(".source-entries").inner_text() == str(api_sources[name]["entries"])
    page.screenshot(path=str(ARTIFACTS / "console-knowledge.png"), full_page=True)

    # A source's page lists its entries; markup in one stays text.
    page.click("#sources-table tr[data-source='gift-cards'] a")
    page.wait_for_url("**/console/knowledge/sources/gift-cards")
    texts = page.locator("#entries-table td.entry-title").all_inner_texts()
    assert f"Where is my gift card balance? {XSS}" in texts
    assert page.evaluate("window.__xss") is None

    # The tester: retrieved entries with scores, the decision to answer, and the answer the bot would give.
    page.goto(server.url + "/console/knowledge/test")
    page.fill("#test-question", "How do I redeem my gift card?")
    page.click("#test-submit")
    page.locator("#test-outcome[data-outcome=answer]").wait_for(timeout=LIVE)
    abstain = page.locator("#test-abstain")
    assert abstain.get_attribute("data-abstain") == "false"
    assert "top entry score" in abstain.inner_text()
    rows = page.locator("#test-entries tbody tr.test-entry")
    assert rows.count() >= 2
    first = rows.nth(0)
    assert first.locator(".entry-source").inner_text().startswith("gift-cards")
    assert "gift-02" in first.locator(".entry-source").inner_text()
    scores = [float(s) for s in page.locator("#test-entries .entry-score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert re.fullmatch(r"\d\.\d{3}", first.locator(".entry-dense").inner_text())
    reply = page.locator("#test-reply").inner_text()
    assert "Enter the gift card code at checkout" in reply
    assert "gift-cards" in page.locator("#test-citations").inner_text()
    page.screenshot(path=str(ARTIFACTS / "console-knowledge-tester.png"), full_page=True)

    # A question the knowledge base cannot answer: the tester shows the abstention and the offer of a person.
    page.fill("#test-question", "What is the boiling point of liquid nitrogen?")
    page.click("#test-submit")
    page.locator("#test-outcome[data-outcome=abstain]").wait_for(timeout=LIVE)
    assert page.locator("#test-abstain").get_attribute("data-abstain") == "true"
    assert "connect you with a person" in page.locator("#test-reply").inner_text()
    assert page.evaluate("window.__xss") is None

    # Delete, after confirming: the source leaves the list.
    page.goto(server.url + "/console/knowledge/sources/scooter-manual")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-source")
    page.wait_for_url("**/console/knowledge")
    page.locator("#sources-table tr.source[data-source='gift-cards']").wait_for(timeout=LIVE)
    assert page.locator("#sources-table tr.source[data-source='scooter-manual']").count() == 0
    context.close()
