"""Security fixtures: one app over a seeded database with a customer pair, one user per role and the admin token."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from support_bot import handoff
from support_bot.chat.store import start_conversation
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.models import CannedResponse, Conversation, Message, User
from tests.conftest import add_user
from tests.web.helpers import login as console_login
from web.app import create_app
from web.console_deps import SESSION_COOKIE

CONSOLE_ROLES = ("agent", "ops", "admin")
SEED_CSV = b"id,question,answer\nseed-1,Do you ship abroad?,Yes: to every EU country within five days.\n"


@pytest.fixture(autouse=True)
def fast_hashing(fast_hashing):
    """The shared fixture (tests/conftest.py) for every test here: they log in many times, and what they check
    does not depend on the cost."""


@dataclass
class Login:
    cookie: str
    csrf: str


@dataclass
class World:
    """Seeded state and ways to make more: conversations in each status, sources, canned replies, logins."""

    settings: Settings
    client: TestClient
    users: dict[str, str]
    conv_a: tuple[str, str]  # (id, token) of customer A: "own"
    conv_b: tuple[str, str]  # customer B's: "other"
    bot_message_a: str
    job_id: str
    logins: dict[str, Login] = field(default_factory=dict)
    _seq: itertools.count = field(default_factory=itertools.count)

    def unique(self, prefix: str) -> str:
        return f"{prefix}{next(self._seq)}"

    # -- console logins ------------------------------------------------------------------------------------------

    def login(self, username: str) -> Login:
        """A fresh console session for username (JSON login), kept for later requests of that actor."""
        me = console_login(self.client, username)
        login = Login(cookie=self.client.cookies.get(SESSION_COOKIE), csrf=me["csrf_token"])
        self.client.cookies.clear()
        self.logins[username] = login
        return login

    def use(self, username: str | None) -> dict[str, str]:
        """Put username's session cookie (or none) in the client's jar; the CSRF header to send with it."""
        self.client.cookies.clear()
        if username is None:
            return {}
        login = self.logins.get(username) or self.login(username)
        self.client.cookies.set(SESSION_COOKIE, login.cookie)
        return {"X-CSRF-Token": login.csrf}

    # -- conversations -------------------------------------------------------------------------------------------

    def user(self, session, role: str) -> User:
        return session.get(User, self.users[role])

    def conversation(self, status: str = "bot", *, holder: str = "agent") -> tuple[str, str]:
        """A new conversation (id, token) in `status`; an assigned one is held by `holder`."""
        with session_scope(self.settings) as session:
            conv, token = start_conversation(session=session, settings=self.settings)
            session.add(Message(conversation_id=conv.id, role="customer", text="Where is my parcel?"))
            if status in ("queued", "assigned", "resolved"):
                handoff.start_handoff(session, self.settings, conv, reason="button")
            if status in ("assigned", "resolved"):
                handoff.claim(session, self.settings, conversation_id=conv.id, agent=self.user(session, holder))
            if status == "resolved":
                handoff.resolve(session, self.settings, conversation_id=conv.id, agent=self.user(session, holder))
            return conv.id, token

    def held_by(self, actor: str) -> str:
        """An assigned conversation the actor may act on: their own when they work conversations."""
        return self.conversation("assigned", holder=actor if actor in ("agent", "admin") else "agent")[0]

    def target_online(self) -> str:
        """The transfer target, online now."""
        with session_scope(self.settings) as session:
            handoff.set_presence(session, self.settings, agent=self.user(session, "target"), status="online")
        return self.users["target"]

    def canned(self) -> int:
        with session_scope(self.settings) as session:
            row = CannedResponse(title=self.unique("Greeting "), text="Hello! How can I help?")
            session.add(row)
            session.flush()
            return row.id

    def suggestion(self) -> str:
        """A pending suggested FAQ entry (as the learning loop makes from a resolved chat); its id."""
        from support_bot.models import FaqSuggestion

        with session_scope(self.settings) as session:
            row = FaqSuggestion(question=self.unique("How do I fix flat tyre "), answer="Use the repair kit.")
            session.add(row)
            session.flush()
            return row.id

    def source(self) -> str:
        """A new one-entry knowledge source, live now; its name."""
        from ingest.pipeline import ingest_path

        name = self.unique("probe-")
        path = self.settings.data_dir / f"{name}.csv"
        path.write_bytes(SEED_CSV.replace(b"seed-1", name.encode()))
        job = ingest_path(settings=self.settings, path=path, source_name=name)
        assert job.status == "succeeded", job.error
        path.unlink()
        return name


def wait_ready(client: TestClient, timeout: float = 300) -> None:
    """The fake model warms up on a thread (the query encoder is traced then: slow on a busy machine); /readyz is
    part of the table, so wait for it."""
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").text
        time.sleep(0.05)


def security_settings(settings: Settings) -> Settings:
    """Rate limits off: these tests send hundreds of requests from one client address on purpose."""
    return settings.model_copy(
        update={"widget": settings.widget.model_copy(update={"rate_limit_enabled": False})}
    )


@pytest.fixture
def world(kb: Settings, tmp_path: Path) -> World:
    from ingest.pipeline import ingest_path

    settings = security_settings(kb)
    users = {role: add_user(settings, role, role) for role in CONSOLE_ROLES}
    for name in ("target", "victim", "loginprobe"):
        users[name] = add_user(settings, name, "agent")
    with session_scope(settings) as session:
        # Many rows hand conversations to the same agents; capacity is not what the table tests.
        session.execute(update(User).values(capacity=100))
    seed = tmp_path / "seed.csv"
    seed.write_bytes(SEED_CSV)
    job = ingest_path(settings=settings, path=seed, source_name="seed")
    assert job.status == "succeeded", job.error
    with TestClient(create_app(settings), follow_redirects=False) as client:
        wait_ready(client)
        w = World(
            settings=settings, client=client, users=users, conv_a=("", ""), conv_b=("", ""), bot_message_a="",
            job_id=job.id,
        )
        w.conv_a, w.conv_b = w.conversation(), w.conversation()
        with session_scope(settings) as session:
            msg = Message(conversation_id=w.conv_a[0], role="bot", text="Parcels arrive within five days.")
            session.add(msg)
            session.flush()
            w.bot_message_a = msg.id
            assert session.get(Conversation, w.conv_a[0]) is not None
        yield w
