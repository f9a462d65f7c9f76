"""Ops tune the embedder and the chat model of a running server and activate both; a customer's question in the
widget is then answered with the tuned embedder's index and the tuned chat adapter; both are rolled back and the
next answer still comes, from the same process.

The server is a real `support-bot serve` with the tiny random Llama of the adaptation tests (transformers backend on
the CPU) and the tuning settings those tests use, so that each tuning run takes seconds. Ops work through the
console's HTTP API (a browser login, its CSRF token). Which chat adapter the engine merged in is read from the
server's own log line (JSON, so that the detached jobs' text lines, which log the gate's engines, never count).
"""

from __future__ import annotations

import json
import re
import time

import pytest

from support_bot.core.config import Settings
from tests.adapt.chat_support import TINY_CHAT, tiny_chatml_llama  # noqa: F401 (a fixture)
from tests.adapt.conftest import TINY
from tests.conftest import PASSWORD, add_user
from tests.e2e.conftest import ARTIFACTS, Server
from tests.e2e.widget_support import HostSite

pytestmark = [pytest.mark.slow, pytest.mark.browser]

LIVE = 60_000  # ms: generous for a loaded 2-core machine; each wait ends as soon as the page shows the thing
JOB_S = 600  # a tuning job of the tiny models takes seconds; this only bounds a hung one
REFUND_Q, REFUND_ENTRY = "How long does it take to get my refund?", "ret-03"
PAYMENT_Q, PAYMENT_ENTRY = "Which payment methods do you accept?", "pay-01"
ENGINE_LOGGER = "support_bot.llm.backends.hf.engine"
EMBEDDER_LOGGER = "support_bot.knowledge.embedder"


def server_env(model_dir, origin: str) -> dict[str, str]:
    """The settings tests/adapt/chat_support.chat_settings(tiny(...)) give, as the server's environment."""
    env = {
        "SUPPORT_BOT_LLM__BACKEND": "transformers",
        "SUPPORT_BOT_LLM__MODEL": str(model_dir),
        "SUPPORT_BOT_LLM__DEVICE": "cpu",
        "SUPPORT_BOT_LLM__MAX_NEW_TOKENS": "8",
        "SUPPORT_BOT_EMBEDDING__QUERY_PATH": "plain",
        "SUPPORT_BOT_ADAPT__HELDOUT_FRACTION": "0.2",
        # The tiny random model is no better than the shipped one: a gate that lets it through, as tests/adapt do.
        "SUPPORT_BOT_ADAPT__GATE_TOLERANCE": "1.0",
        "SUPPORT_BOT_WIDGET__ALLOWED_ORIGINS": json.dumps([origin]),
        "SUPPORT_BOT_LOG__FORMAT": "json",
        "SUPPORT_BOT_LOG__LEVEL": "INFO",
    }
    env.update({f"SUPPORT_BOT_ADAPT__{k.upper()}": str(v) for k, v in TINY.items()})
    env.update({f"SUPPORT_BOT_ADAPT__CHAT__{k.upper()}": str(v) for k, v in TINY_CHAT.items()})
    return env


class Ops:
    """An ops user's console session, driving the adaptation API as the console's pages do."""

    def __init__(self, browser, server: Server, username: str):
        self.url = server.url
        self.page = browser.new_context().new_page()
        self.page.goto(server.url + "/console/login?next=/console/knowledge/adaptation")
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=password]", PASSWORD)
        self.page.click("#login-submit")
        self.page.wait_for_url("**/console/knowledge/adaptation")
        self.csrf = self.page.locator('meta[name="csrf-token"]').get_attribute("content")

    def get(self, path: str) -> dict:
        response = self.page.request.get(self.url + path)
        assert response.ok, response.text()
        return response.json()

    def post(self, path: str, body: dict | None = None, status: int = 202) -> dict:
        response = self.page.request.post(self.url + path, data=body or {}, headers={"X-CSRF-Token": self.csrf})
        assert response.status == status, response.text()
        return response.json()

    def run(self, path: str, body: dict | None = None) -> dict:
        """Start an adaptation job and wait for it to succeed; -> its result."""
        job = self.post(f"/api/console/adapters{path}", body)["job"]
        deadline = time.monotonic() + JOB_S
        while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = self.get(f"/api/console/adapters/jobs/{job['id']}")
        assert job["status"] == "succeeded", job
        return job["result"]

    def live(self, kind: str) -> str | None:
        return self.get(f"/api/console/adapters?kind={kind}")["live"]

    def index_version(self, question: str) -> int:
        """The index version the server's own retrieval searches now (the knowledge tester reports it)."""
        return self.post("/api/knowledge/test", {"question": question}, status=200)["index_version"]


def server_lines(server: Server, logger: str) -> list[str]:
    """Messages of one logger in the server process's JSON log (the detached jobs write text lines)."""
    out = []
    for line in server.log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("logger") == logger:
                out.append(record["message"])
    return out


def served_adapters(server: Server) -> list[str]:
    """Each switch of the server's chat engine, in order: an adapter id or "the model as shipped"."""
    switch = re.compile(r": serving (.+) \(\d")
    return [m.group(1) for m in map(switch.search, server_lines(server, ENGINE_LOGGER)) if m]


def ask(page, text: str, count: int) -> dict:
    """Ask in the widget and wait for the `count`th stored bot answer; -> its text and cited entries."""
    page.locator(".composer textarea").fill(text)
    page.locator(".composer textarea").press("Enter")
    page.wait_for_function(
        """n => { const r = document.querySelector('support-bot-widget').shadowRoot;
                  return r.querySelectorAll('li[data-role=bot][data-id] .fb').length >= n
                         && !r.querySelector('.streaming'); }""",
        arg=count,
        timeout=LIVE,
    )
    reply = page.locator("li[data-role=bot][data-id]").nth(count - 1)
    return {
        "text": reply.locator(".text").inner_text(),
        "cited": reply.locator(".citation").evaluate_all("els => els.map(e => e.dataset.entryId)"),
    }


def test_tuned_embedder_and_chat_adapter_go_live_answer_in_the_widget_and_roll_back(
    tmp_path, browser, tiny_chatml_llama  # noqa: F811 (the fixture imported above)
):
    host = HostSite()
    server = Server(tmp_path / "srv-data", tmp_path / "models", extra_env=server_env(tiny_chatml_llama, host.origin))
    try:
        server.start()
        pid = server.proc.pid
        add_user(Settings(data_dir=server.data_dir), "olga", "ops")
        ops = Ops(browser, server, "olga")
        assert ops.live("embedder") is None and ops.live("chat") is None
        shipped_version = ops.index_version(REFUND_Q)

        # Ops tune both models on the seeded demo FAQ and activate them, as the console's Adaptation page does.
        embedder_id = ops.run("/tune", {"kind": "embedder"})["id"]
        activated = ops.run(f"/{embedder_id}/activate")
        tuned_version = activated["index_version"]
        assert activated["artifact"] == embedder_id and tuned_version > shipped_version
        chat_id = ops.run("/tune", {"kind": "chat"})["id"]
        assert ops.run(f"/{chat_id}/activate")["artifact"] == chat_id
        assert ops.live("embedder") == embedder_id and ops.live("chat") == chat_id
        assert chat_id not in served_adapters(server)  # the engine switches before its next answer, not before

        # A customer asks in the widget on another site: a cited answer, from the tuned index and the tuned adapter.
        site = host.page("/shop.html", (
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>'
            f'<script src="{server.url}/widget.js" async></script></head><body><h1>Shop</h1></body></html>'
        ))
        customer = browser.new_context().new_page()
        customer.goto(site)
        customer.locator(".launcher").click()
        customer.locator(".panel").wait_for(state="visible", timeout=LIVE)
        first = ask(customer, REFUND_Q, 1)
        assert first["text"].strip() and first["cited"] == [REFUND_ENTRY], first
        customer.screenshot(path=str(ARTIFACTS / "widget-adapted-answer.png"))
        assert served_adapters(server) == [chat_id]
        tuned_dir = f"adapters/embedder/{embedder_id}/model"
        assert any(m.startswith("loading embedding model") and tuned_dir in m
                   for m in server_lines(server, EMBEDDER_LOGGER)), "the server never loaded the tuned embedder"
        assert ops.index_version(REFUND_Q) == tuned_version

        # Ops roll both back; the same process answers the next question with the shipped models.
        back = ops.run("/rollback", {"kind": "embedder"})
        assert back["artifact"] is None and back["index_version"] > tuned_version
        assert ops.run("/rollback", {"kind": "chat"})["artifact"] is None
        assert ops.live("embedder") is None and ops.live("chat") is None
        second = ask(customer, PAYMENT_Q, 2)
        assert second["text"].strip() and second["cited"] == [PAYMENT_ENTRY], second
        assert served_adapters(server) == [chat_id, "the model as shipped"]
        assert ops.index_version(PAYMENT_Q) == back["index_version"]
        assert server.proc.poll() is None and server.proc.pid == pid
    finally:
        server.stop()
        host.stop()
