"""Login checks: generic failures, lockout after repeated wrong passwords, disabled accounts."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from support_bot.ops import audit, auth
from support_bot.core.db import session_scope
from support_bot.models import User, utcnow
from tests.conftest import PASSWORD, add_user


def attempt(settings, username, password, now=None):
    """One login attempt in its own transaction, committed like the web layer does; the username or None."""
    with session_scope(settings) as session:
        user = auth.authenticate(session, settings=settings, username=username, password=password, now=now)
        return user.username if user is not None else None


def state(settings, username) -> User:
    with session_scope(settings) as session:
        return session.scalar(select(User).where(User.username == username))


def test_right_password_logs_in_and_names_are_case_insensitive(db):
    add_user(db, "Dana")
    assert attempt(db, "dana", PASSWORD) == "dana"
    assert attempt(db, "  DANA ", PASSWORD) == "dana"
    assert state(db, "dana").last_login_at is not None


def test_failures_are_generic_for_unknown_users_wrong_passwords_and_bad_names(db):
    add_user(db, "dana")
    assert attempt(db, "dana", "wrong-password") is None
    assert attempt(db, "nobody", PASSWORD) is None
    assert attempt(db, "not a valid name!", PASSWORD) is None
    assert attempt(db, "dana", "") is None
    # Only the real account's counter moves; nothing is created for unknown names.
    assert state(db, "dana").failed_logins == 2
    assert state(db, "nobody") is None


def test_a_success_resets_the_failure_count(db):
    add_user(db, "dana")
    for _ in range(db.console.lockout_attempts - 1):
        assert attempt(db, "dana", "wrong-password") is None
    assert attempt(db, "dana", PASSWORD) == "dana"
    assert state(db, "dana").failed_logins == 0
    for _ in range(db.console.lockout_attempts - 1):
        assert attempt(db, "dana", "wrong-password") is None
    assert attempt(db, "dana", PASSWORD) == "dana"


def test_lockout_after_repeated_failures_then_it_expires(any_db):
    settings = any_db
    user_id = add_user(settings, "dana")
    start = utcnow()
    for _ in range(settings.console.lockout_attempts):
        assert attempt(settings, "dana", "wrong-password", now=start) is None
    locked = state(settings, "dana")
    assert auth.is_locked(locked, start)
    # While locked even the right password is refused, and further guesses do not extend the lock.
    assert attempt(settings, "dana", PASSWORD, now=start + timedelta(minutes=1)) is None
    for _ in range(settings.console.lockout_attempts):
        attempt(settings, "dana", "wrong-password", now=start + timedelta(minutes=2))
    assert auth._aware(state(settings, "dana").locked_until) == auth._aware(locked.locked_until)
    later = start + timedelta(minutes=settings.console.lockout_minutes, seconds=1)
    assert attempt(settings, "dana", PASSWORD, now=later) == "dana"
    with session_scope(settings) as session:
        entries = audit.entries(session, action="user.login_locked")
        assert [(e.target_id, e.actor_name) for e in entries] == [(user_id, "system")]
        assert entries[0].detail["attempts"] == settings.console.lockout_attempts


def test_lockout_settings_are_honoured(db):
    strict = db.model_copy(
        update={"console": db.console.model_copy(update={"lockout_attempts": 2, "lockout_minutes": 60})}
    )
    add_user(strict, "dana")
    now = utcnow()
    attempt(strict, "dana", "wrong-password", now=now)
    assert attempt(strict, "dana", PASSWORD, now=now) == "dana"
    attempt(strict, "dana", "wrong-password", now=now)
    attempt(strict, "dana", "wrong-password", now=now)
    assert attempt(strict, "dana", PASSWORD, now=now + timedelta(minutes=59)) is None
    assert attempt(strict, "dana", PASSWORD, now=now + timedelta(minutes=61)) == "dana"


def test_parallel_guesses_all_count(any_db):
    settings = any_db
    add_user(settings, "dana")
    n = settings.console.lockout_attempts
    barrier = threading.Barrier(n)

    def guess():
        barrier.wait()
        attempt(settings, "dana", "wrong-password")

    threads = [threading.Thread(target=guess) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert auth.is_locked(state(settings, "dana"))
    assert attempt(settings, "dana", PASSWORD) is None


def test_disabled_users_cannot_log_in(db):
    user_id = add_user(db, "dana")
    add_user(db, "root", role="admin")
    with session_scope(db) as session:
        auth.set_active(session, user=auth.get_user(session, user_id), active=False)
    assert attempt(db, "dana", PASSWORD) is None
    with session_scope(db) as session:
        auth.set_active(session, user=auth.get_user(session, user_id), active=True)
    assert attempt(db, "dana", PASSWORD) == "dana"
