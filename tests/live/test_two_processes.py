"""Two `support-bot serve` processes on one database and one Redis: what happens on one is live on the other."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

from support_bot.ops import auth
from support_bot.core.db import migrate
from tests.conftest import PASSWORD, add_user, free_port

pytestmark = [pytest.mark.redis, pytest.mark.timeout(300)]


class Server:
    """One `support-bot serve` process on a loopback port."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path):
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        support_bot = Path(sys.executable).with_name("support-bot")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(support_bot), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
            )

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.log.read_text()}"
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not become healthy:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def frames(lines):
    """SSE frames as dicts ("comment" for `:` lines, "data" parsed)."""
    frame: dict = {}
    for line in lines:
        if line == "":
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            frame["comment"] = line[1:].strip()
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            frame[field] = json.loads(value) if field == "data" else value


@pytest.fixture
def servers(tmp_path, settings, redis_url):
    """Processes A and B, sharing a SQLite file and the test Redis (on channels of their own)."""
    migrate(settings)
    auth._hasher = PasswordHasher()  # the servers hash with their own defaults; only this user is made here
    # An existing user means neither server creates (and races to create) the first admin.
    add_user(settings, "dana")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_BOT_")}
    env.update({
        "SUPPORT_BOT_DATA_DIR": str(settings.data_dir.resolve()),
        "SUPPORT_BOT_REDIS_URL": redis_url,
        "SUPPORT_BOT_EVENTS__CHANNEL_PREFIX": f"sbtest-{uuid.uuid4().hex[:10]}:",
        # Far longer than the test: an event can reach A only through Redis, not through A's own periodic re-read,
        # and a stream can only end early because the server ended it.
        "SUPPORT_BOT_EVENTS__HEARTBEAT_S": "3600",
        "SUPPORT_BOT_EVENTS__MAX_STREAM_S": "86400",
        "SUPPORT_BOT_LLM__BACKEND": "fake",
        "SUPPORT_BOT_SAFETY__ENABLED": "false",
    })
    started = []
    try:
        for name in ("a", "b"):
            server = Server(name, env, tmp_path)
            started.append(server)
            server.wait_healthy()
        yield started
    finally:
        for server in started:
            server.stop()


def test_events_caused_on_one_process_stream_live_from_the_other(servers):
    a, b = servers
    with httpx.Client(base_url=a.base, timeout=60) as on_a, httpx.Client(base_url=b.base, timeout=60) as on_b:
        res = on_a.post("/api/conversations", json={})
        assert res.status_code == 201, res.text
        conv, token = res.json()["id"], res.json()["token"]
        customer = {"Authorization": f"Bearer {token}"}
        assert on_a.post("/api/console/login", json={"username": "dana", "password": PASSWORD}).status_code == 200

        # No ?timeout=: these streams would stay open for a day; a read waiting over 60 s fails the test instead.
        with on_a.stream("GET", f"/api/conversations/{conv}/events", headers=customer) as customer_stream, \
                on_a.stream("GET", "/api/console/events") as console_stream:
            assert customer_stream.status_code == 200 and console_stream.status_code == 200
            customer_frames, console_frames = frames(customer_stream.iter_lines()), frames(console_stream.iter_lines())
            # Both streams are subscribed once their first frame is out.
            assert next(customer_frames) == {"retry": "2000"}
            assert next(console_frames) == {"retry": "2000"}

            # On B: the customer presses "talk to a person"; A's streams show the new status.
            res = on_b.post(f"/api/conversations/{conv}/handoff", headers=customer, json={})
            assert res.status_code == 200, res.text
            status = next(customer_frames)
            assert status["event"] == "status" and status["data"]["conversation_id"] == conv
            assert status["data"]["status"] == "queued"
            seen = next(console_frames)
            while seen.get("id") != status["id"]:  # the console also sees e.g. the customer's handoff message
                seen = next(console_frames)

            # Typing is never stored: it can only have crossed from B to A through Redis.
            res = on_b.post(f"/api/conversations/{conv}/typing", headers=customer, json={"typing": True})
            assert res.status_code == 204, res.text
            typing = next(console_frames)
            while typing.get("event") != "typing":
                typing = next(console_frames)
            assert typing["data"] == {"conversation_id": conv, "who": "customer", "name": None, "typing": True}

            # Stopping A ends its open streams cleanly (a complete response, not a reset) and A exits.
            a.proc.send_signal(signal.SIGTERM)
            # httpx raises if a response ends without its final chunk; reading to the end is the check.
            list(customer_frames)
            list(console_frames)
        # uvicorn re-raises the signal once its graceful shutdown is done, so "killed by SIGTERM" is a clean exit.
        assert a.proc.wait(60) in (0, -signal.SIGTERM), a.log.read_text()
        log = a.log.read_text()
        assert "Application shutdown complete" in log and "Traceback" not in log, log
