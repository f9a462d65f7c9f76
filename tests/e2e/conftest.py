"""End-to-end fixtures: the real default model, a real server process, Debian's Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from support_bot.core.config import Settings
from tests.conftest import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The real default model, pulled once into a cache shared by test runs."""
    from support_bot.llm.pull import pull_model

    cache = Path(os.environ.get("SUPPORT_BOT_TEST_MODEL_CACHE", Path.home() / ".cache" / "support-bot-test"))
    settings = Settings(llm={"cache_dir": cache})
    pull_model(settings.llm.model, settings, progress=False)
    return cache


class Server:
    """`support-bot serve` in a child process on a loopback port."""

    def __init__(self, data_dir: Path, model_cache: Path, extra_env: dict | None = None):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_BOT_")},
            "SUPPORT_BOT_DATA_DIR": str(data_dir),
            "SUPPORT_BOT_LLM__CACHE_DIR": str(model_cache),
            "SUPPORT_BOT_LLM__MAX_NEW_TOKENS": "64",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.log = data_dir / "server.log"

    def start(self, timeout: float = 180) -> "Server":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "support_bot.cli", "serve", "--seed", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"server not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def server(tmp_path, model_cache):
    srv = Server(tmp_path / "srv-data", model_cache).start()
    yield srv
    srv.stop()


@pytest.fixture
def fake_server(tmp_path):
    """A server on the fake LLM backend, for stories about the product around the answers (and fast)."""
    srv = Server(tmp_path / "srv-data", tmp_path / "models", extra_env={"SUPPORT_BOT_LLM__BACKEND": "fake"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("SUPPORT_BOT_TEST_REQUIRE_ALL"):
            pytest.fail(f"{CHROMIUM} is required (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()
