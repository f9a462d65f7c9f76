"""A customer asks for a person; an ops user then finds that handoff, and its reason, in the console's analytics.

The server runs the fake LLM backend: the story is about what analytics shows, not about answers.
"""

from __future__ import annotations

import csv
import io

import pytest

from tests.conftest import PASSWORD, add_user
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_handoff_story import LIVE, conversation_id, server_settings, stored

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_ops_sees_the_reason_of_a_real_handoff_in_analytics(fake_server, browser):
    server = fake_server
    settings = server_settings(server)
    add_user(settings, "olga", "ops")

    customer = browser.new_context().new_page()
    customer.goto(server.url + "/")
    customer.fill("#chat-input", "I want to talk to a real person please")
    customer.press("#chat-input", "Enter")
    customer.locator("#chat-handoff-status").filter(has_text="No one from our team is online").wait_for(timeout=LIVE)
    conv, _ = stored(server, conversation_id(customer))
    assert conv.handoff_reason == "request"

    ops = browser.new_context().new_page()
    ops.goto(server.url + "/console/login?next=/console/analytics")
    ops.fill("input[name=username]", "olga")
    ops.fill("input[name=password]", PASSWORD)
    ops.click("#login-submit")
    ops.wait_for_url("**/console/analytics")

    # The reason shows in the chart and in the table, with the one conversation it stands for.
    bar = ops.locator("#chart-reasons .bar-row[data-key=request]")
    assert bar.locator(".bar-label").text_content() == "Customer asked for a person"
    assert bar.locator(".bar-value").text_content() == "1 (100.0%)"
    cells = ops.locator("#table-reasons tr[data-key=request] td").all_inner_texts()
    assert cells == ["request", "Customer asked for a person", "1", "100.0%"]
    assert "Handed to a person" in ops.locator("#tile-handoff").inner_text()
    assert "100.0%" in ops.locator("#tile-handoff").inner_text()
    # The one chat with a customer message went to a person, so the bot deflected none.
    assert "0.0%" in ops.locator("#tile-deflection").inner_text()
    ops.screenshot(path=str(ARTIFACTS / "console-analytics.png"), full_page=True)

    # The same table downloads as CSV.
    with ops.expect_download() as download:
        ops.click("#csv-reasons")
    rows = list(csv.reader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    assert rows[0] == ["reason", "label", "conversations", "share"]
    assert ["request", "Customer asked for a person", "1", "1.0"] in rows

    # Content gaps is one click away and opens for the same range.
    ops.click("#gaps-link")
    ops.wait_for_url("**/console/gaps?*")
    ops.locator("#gaps-summary").wait_for(timeout=LIVE)
