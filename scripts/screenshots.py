"""Screenshots of the product for the docs and for review: `make screenshots` (or `python scripts/screenshots.py`).

Starts `support-bot serve --seed` (the demo FAQ) on the fake LLM backend in a throw-away data dir, embeds the widget in
a small host page of another origin, plays a short story (a customer gets an answer, another leaves a message while
nobody is online, a third is handed to the admin, who answers and resolves), and writes PNGs of the widget in each
state and of every console page, logged in as the admin. Drives Debian's Chromium (/usr/bin/chromium) through
Playwright; everything stays on the loopback interface.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 60_000
VIEWPORT = {"width": 1280, "height": 860}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HostPage:
    """A shop page on another origin that embeds the widget, as a company's site would."""

    def __init__(self, bot_url: str):
        html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><title>Acme outdoor gear</title>'
            "<style>body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1c1e21;background:#fafafa}"
            "header{background:#274b3a;color:#fff;padding:18px 32px}main{padding:24px 32px;max-width:720px}</style>"
            f'<script src="{bot_url}/widget.js" async></script></head>'
            "<body><header><strong>Acme outdoor gear</strong></header><main><h1>Tents, packs and boots</h1>"
            "<p>Free shipping on orders over 50 euros. Questions? Our assistant answers in the corner.</p>"
            "</main></body></html>"
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(html)))
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Product:
    """`support-bot serve --seed` on the fake LLM backend, in a child process on a loopback port."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / "server.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_BOT_")},
            "SUPPORT_BOT_DATA_DIR": str(data_dir),
            "SUPPORT_BOT_LLM__BACKEND": "fake",
        }
        self.proc: subprocess.Popen | None = None

    def allow(self, origin: str) -> None:
        """Let pages of this site use the chat API (the widget's CORS allow-list)."""
        self.env["SUPPORT_BOT_WIDGET__ALLOWED_ORIGINS"] = json.dumps([origin])

    def start(self, timeout: float = 300) -> Product:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "support_bot.cli", "serve", "--seed", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"the server was not ready in {timeout:.0f}s:\n{self.log.read_text()[-3000:]}")

    def admin_password(self) -> str:
        """The first admin's one-time password, from the owner-only file the server writes on its first start."""
        return (self.data_dir / "admin-password.txt").read_text(encoding="utf-8").strip()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Shots:
    def __init__(self, out: Path):
        self.out = out
        self.written: list[Path] = []

    def take(self, page, name: str, *, full_page: bool = False) -> None:
        path = self.out / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        self.written.append(path)
        print(f"  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)


def widget(page):
    """The widget's shadow root as a Playwright locator scope (Playwright pierces open shadow roots)."""
    return page.locator("support-bot-widget")


def open_widget(page, url: str):
    page.goto(url)
    widget(page).locator(".launcher").click()
    widget(page).locator(".panel").wait_for(state="visible", timeout=WAIT_MS)


def ask(page, text: str, answers: int) -> None:
    box = widget(page).locator(".composer textarea")
    box.fill(text)
    box.press("Enter")
    page.wait_for_function(
        """n => { const r = document.querySelector('support-bot-widget').shadowRoot;
                  return r.querySelectorAll('li[data-role=bot][data-id]').length >= n && !r.querySelector('.streaming'); }""",
        arg=answers,
        timeout=WAIT_MS,
    )


def log_in_as_admin(context, product: Product):
    """The admin's first login with the one-time password, then a password of their own."""
    page = context.new_page()
    one_time = product.admin_password()
    page.goto(product.url + "/console/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", one_time)
    page.click("#login-submit")
    page.wait_for_url("**/console/account**")
    own = secrets.token_urlsafe(18)
    page.fill("#current_password", one_time)
    page.fill("#new_password", own)
    page.fill("#confirm_password", own)
    page.click("#password-submit")
    page.wait_for_url("**/console/account?changed=1")
    return page


def story(browser, product: Product, host: HostPage, shots: Shots) -> None:
    def fresh():
        return browser.new_context(viewport=VIEWPORT).new_page()

    shop = host.origin + "/"
    print("the widget", flush=True)
    customer = fresh()
    customer.goto(shop)
    widget(customer).locator(".launcher").wait_for(state="visible", timeout=WAIT_MS)
    shots.take(customer, "widget-closed")
    widget(customer).locator(".launcher").click()
    widget(customer).locator(".panel").wait_for(state="visible", timeout=WAIT_MS)
    shots.take(customer, "widget-open")
    ask(customer, "How long does it take to get my refund?", 1)
    shots.take(customer, "widget-answered")

    # Nobody is online yet: the widget offers to leave a message for an answer by e-mail.
    offline = fresh()
    open_widget(offline, shop)
    widget(offline).locator(".chip", has_text="Talk to a person").click()
    widget(offline).locator("form.offline").wait_for(state="visible", timeout=WAIT_MS)
    widget(offline).locator("form.offline textarea").fill("My tent arrived without its poles.")
    widget(offline).locator("form.offline input[type=email]").fill("sam@example.com")
    shots.take(offline, "widget-offline-form")
    widget(offline).locator("form.offline button[type=submit]").click()
    widget(offline).locator(".banner", has_text="answer by e-mail").wait_for(timeout=WAIT_MS)

    print("the console", flush=True)
    admin = log_in_as_admin(browser.new_context(viewport=VIEWPORT), product)
    admin.goto(product.url + "/console/queue")
    admin.locator("#live-status[data-state=live]").wait_for(timeout=WAIT_MS)
    with admin.expect_response(lambda r: r.url.endswith("/api/console/presence") and r.request.method == "POST"):
        admin.select_option("#presence", "online")

    # A customer asks for a person while the admin is online: the queue, the claim, a live reply, the resolve.
    waiting = fresh()
    open_widget(waiting, shop)
    ask(waiting, "Can I return an online order in a store?", 1)
    widget(waiting).locator(".chip", has_text="Talk to a person").click()
    widget(waiting).locator(".banner", has_text="Connecting you").wait_for(timeout=WAIT_MS)
    shots.take(waiting, "widget-handoff-queued")
    conv_id = waiting.evaluate(
        "() => JSON.parse(localStorage.getItem(Object.keys(localStorage).find(k => k.startsWith('support-bot-widget:')"
        " && !k.endsWith(':open')))).id"
    )
    item = admin.locator(f".queue-item[data-id='{conv_id}']")
    item.wait_for(timeout=WAIT_MS)
    shots.take(admin, "console-queue", full_page=True)
    item.locator(".claim-btn").click()
    admin.wait_for_url(f"**/console/conversations/{conv_id}")
    admin.locator("#conv-status[data-status=assigned]").wait_for(timeout=WAIT_MS)
    admin.fill(
        "#reply-text",
        # The order number shows how the suggested FAQ entry made from this chat is generalized and flagged.
        "I checked order 5521: yes, bring the item and the order confirmation to any of our stores within 30 days; "
        "the refund goes back to the way you paid.",
    )
    admin.click("#reply-send")
    widget(waiting).locator("li[data-role=agent]").wait_for(timeout=WAIT_MS)
    shots.take(waiting, "widget-handoff-agent")
    shots.take(admin, "console-conversation", full_page=True)
    admin.click("#resolve-btn")
    admin.locator("#conv-status[data-status=resolved]").wait_for(timeout=WAIT_MS)
    widget(waiting).locator("form.rating").wait_for(state="visible", timeout=WAIT_MS)
    shots.take(waiting, "widget-resolved-rating")

    pages = {
        "console-knowledge": "/console/knowledge",
        "console-knowledge-source": "/console/knowledge/sources/demo-faq",
        "console-suggestions": "/console/suggestions",
        "console-analytics": "/console/analytics",
        "console-gaps": "/console/gaps",
        "console-users": "/console/users",
        "console-settings": "/console/settings",
        "console-audit": "/console/audit",
        "console-account": "/console/account",
    }
    for name, path in pages.items():
        admin.goto(product.url + path)
        admin.wait_for_load_state("networkidle")
        shots.take(admin, name, full_page=True)
    admin.goto(product.url + "/console/knowledge/test")
    admin.fill("#test-question", "Do gift cards expire?")
    admin.click("#test-submit")
    admin.locator("#test-result:not([hidden])").wait_for(timeout=WAIT_MS)
    shots.take(admin, "console-knowledge-test", full_page=True)

    login = fresh()
    login.goto(product.url + "/console/login")
    shots.take(login, "console-login")
    demo = fresh()
    demo.goto(product.url + "/")
    demo.fill("#chat-input", "Do you ship to Canada?")
    demo.press("#chat-input", "Enter")
    demo.locator("#chat-log li.msg-bot[data-id]").wait_for(timeout=WAIT_MS)
    shots.take(demo, "demo-page")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "screenshots"), help="folder for the PNGs (default: screenshots/)")
    parser.add_argument("--chromium", default=CHROMIUM, help="the Chromium binary (default: Debian's)")
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        print(f"{args.chromium} is missing: apt-get install chromium", file=sys.stderr)
        return 1
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="support-bot-screenshots-") as tmp:
        product = Product(Path(tmp) / "data")
        host = HostPage(product.url)
        product.allow(host.origin)
        print(f"starting the product on {product.url} (fake LLM, demo FAQ)", flush=True)
        product.start()
        shots = Shots(out)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                try:
                    story(browser, product, host, shots)
                finally:
                    browser.close()
        finally:
            product.stop()
            host.stop()
    print(f"{len(shots.written)} screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
