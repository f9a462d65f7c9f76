"""Login checks: generic failures, failure counts that never lock an account, throttling, disabled accounts."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from support_bot.core.db import session_scope
from support_bot.core.ratelimit import MemoryFailureCounter, RateLimited
from support_bot.models import User
from support_bot.ops import audit, auth
from support_bot.ops.login_throttle import (
    ACCOUNT_MAX_WAIT_S,
    CLIENT_FREE_FAILURES,
    LoginThrottle,
    device_cookie,
    device_trusted,
)
from tests.conftest import PASSWORD, add_user


def attempt(settings, username, password, now=None):
    """One login attempt in its own transaction, committed like the web layer does; the username or None."""
    with session_scope(settings) as session:
        user = auth.authenticate(session, settings=settings, username=username, password=password, now=now)
        return user.username if user is not None else None


def state(settings, username) -> User:
    with session_scope(settings) as session:
        return session.scalar(select(User).where(User.username == username))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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


def test_no_number_of_wrong_passwords_locks_the_account(any_db):
    # Anyone can type wrong passwords for "admin": that must never keep the admin out.
    settings = any_db
    user_id = add_user(settings, "dana")
    for _ in range(settings.console.lockout_attempts * 3):
        assert attempt(settings, "dana", "wrong-password") is None
    assert not auth.is_locked(state(settings, "dana"))
    assert attempt(settings, "dana", PASSWORD) == "dana"
    with session_scope(settings) as session:
        assert audit.entries(session, action="user.login_locked") == []
        # An admin still learns that someone tried, once per run of failures.
        entries = audit.entries(session, action="user.login_failures")
        assert [(e.target_id, e.actor_name) for e in entries] == [(user_id, "system")]
        assert entries[0].detail["attempts"] == settings.console.lockout_attempts


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
    assert state(settings, "dana").failed_logins == n


def test_disabled_users_cannot_log_in(db):
    user_id = add_user(db, "dana")
    add_user(db, "root", role="admin")
    with session_scope(db) as session:
        auth.set_active(session, user=auth.get_user(session, user_id), active=False)
    assert attempt(db, "dana", PASSWORD) is None
    with session_scope(db) as session:
        auth.set_active(session, user=auth.get_user(session, user_id), active=True)
    assert attempt(db, "dana", PASSWORD) == "dana"


# -- the throttle --------------------------------------------------------------------------------------------------


def throttle_for(settings) -> tuple[LoginThrottle, Clock]:
    clock = Clock()
    return LoginThrottle(settings, counter=MemoryFailureCounter(clock)), clock


def refused_for(throttle: LoginThrottle, **who) -> int | None:
    """Seconds the throttle makes this attempt wait, or None when it may go ahead."""
    try:
        throttle.check(**who)
    except RateLimited as exc:
        return exc.retry_after_s
    return None


def test_an_accounts_backoff_doubles_is_capped_and_never_holds_back_a_browser_that_logged_in_before(settings):
    throttle, clock = throttle_for(settings)
    free = settings.console.lockout_attempts
    stranger = {"username": "admin", "trusted": False}
    for n in range(free):
        assert refused_for(throttle, client=f"10.0.0.{n}", **stranger) is None
        throttle.failed(client=f"10.0.0.{n}", **stranger)
    # From other addresses too: the account's back-off covers every browser that never logged in to it...
    waits = []
    for n in range(8):
        waits.append(refused_for(throttle, client=f"10.1.0.{n}", **stranger))
        clock.now += waits[-1]
        throttle.failed(client=f"10.1.0.{n}", **stranger)
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    assert max(waits) == ACCOUNT_MAX_WAIT_S  # a slowdown, never a lock-out
    # ...but not the admin's own browser, wherever it is.
    assert refused_for(throttle, client="192.0.2.7", username="admin", trusted=True) is None
    # Other accounts are not affected.
    assert refused_for(throttle, client="10.2.0.1", username="dana", trusted=False) is None


def test_a_client_that_keeps_failing_is_held_back_on_every_account_it_tries(settings):
    throttle, clock = throttle_for(settings)
    for n in range(CLIENT_FREE_FAILURES):
        throttle.failed(client="203.0.113.9", username=f"user{n}", trusted=False)
    wait = refused_for(throttle, client="203.0.113.9", username="someone-else", trusted=True)
    assert wait == 1
    clock.now += 1
    assert refused_for(throttle, client="203.0.113.9", username="someone-else", trusted=True) is None
    # Another address is not held back by this one.
    assert refused_for(throttle, client="198.51.100.1", username="user0", trusted=False) is None
    # The right password starts the address afresh.
    throttle.succeeded(client="203.0.113.9", username="someone-else")
    throttle.failed(client="203.0.113.9", username="someone-else", trusted=True)
    assert refused_for(throttle, client="203.0.113.9", username="someone-else", trusted=True) is None


def test_counts_are_forgotten_after_a_quiet_spell_and_memory_stays_bounded(settings):
    throttle, clock = throttle_for(settings)
    for _ in range(settings.console.lockout_attempts + 3):
        throttle.failed(client="10.9.9.9", username="dana", trusted=False)
    assert refused_for(throttle, client="10.3.3.3", username="dana", trusted=False)
    clock.now += settings.console.lockout_minutes * 60 + 1
    assert refused_for(throttle, client="10.3.3.3", username="dana", trusted=False) is None
    counter = MemoryFailureCounter(clock, max_keys=100)
    sprayed = LoginThrottle(settings, counter=counter)
    for n in range(1000):
        sprayed.failed(client=f"10.4.{n // 250}.{n % 250}", username=f"made-up-{n}", trusted=False)
    assert len(counter) <= 100


def test_a_device_cookie_names_one_account_and_cannot_be_forged(settings):
    cookie = device_cookie(settings, "Admin")
    assert device_trusted(settings, cookie, "admin") and device_trusted(settings, cookie, " ADMIN ")
    assert not device_trusted(settings, cookie, "dana")
    nonce, _, signature = cookie.partition(".")
    assert not device_trusted(settings, f"{nonce}.{'0' * len(signature)}", "admin")
    for junk in (None, "", "no-dot", "é.é", "a." + "b" * 500):
        assert not device_trusted(settings, junk, "admin")
    other_server = settings.model_copy(update={"admin_token": "another-servers-admin-token-xyz"})
    assert not device_trusted(other_server, cookie, "admin")


@pytest.mark.parametrize("username", ["admin", "nobody-here", "Not A Name!"])
def test_throttled_answers_are_the_same_for_known_and_unknown_accounts(settings, username):
    throttle, _clock = throttle_for(settings)
    for n in range(settings.console.lockout_attempts):
        throttle.failed(client=f"10.5.0.{n}", username=username, trusted=False)
    with pytest.raises(RateLimited, match=r"^Too many failed logins\. Please wait 1 second and try again\.$"):
        throttle.check(client="10.6.0.1", username=username, trusted=False)
