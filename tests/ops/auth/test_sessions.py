"""Server-side console sessions: random tokens stored hashed, expiry, idle timeout, ending them, CSRF tokens."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from support_bot.ops import auth
from support_bot.core.db import session_scope
from support_bot.models import ConsoleSession, utcnow
from tests.conftest import PASSWORD, add_user


def start(settings, user_id, now=None):
    with session_scope(settings) as session:
        token, login = auth.start_session(session, settings=settings, user=auth.get_user(session, user_id), now=now)
        return token, login.csrf_token


def resolve(settings, token, now=None):
    with session_scope(settings) as session:
        login = auth.resolve_session(session, settings=settings, token=token, now=now)
        return (login.user.username, login.csrf_token) if login is not None else None


def rows(settings) -> int:
    with session_scope(settings) as session:
        return session.scalar(select(func.count()).select_from(ConsoleSession))


def test_a_session_resolves_to_its_user_and_only_the_hash_is_stored(any_db):
    settings = any_db
    user_id = add_user(settings, "dana")
    token, csrf = start(settings, user_id)
    assert resolve(settings, token) == ("dana", csrf)
    with session_scope(settings) as session:
        stored = session.scalars(select(ConsoleSession)).one()
        assert stored.token_hash == auth.token_hash(token) != token
        assert token not in (stored.csrf_token, stored.token_hash)
    assert resolve(settings, token + "x") is None
    assert resolve(settings, "") is None and resolve(settings, None) is None


def test_every_session_gets_its_own_token_and_csrf_token(db):
    user_id = add_user(db, "dana")
    first, second = start(db, user_id), start(db, user_id)
    assert first[0] != second[0] and first[1] != second[1]
    assert len(first[0]) >= 40 and len(first[1]) >= 40
    assert rows(db) == 2


def test_sessions_expire_after_their_maximum_age(db):
    user_id = add_user(db, "dana")
    now = utcnow()
    token, _ = start(db, user_id, now=now)
    max_age = timedelta(seconds=db.console.session_max_age_s)
    # Stay active (under the idle limit) right up to the maximum age.
    step = timedelta(seconds=db.console.idle_timeout_s // 2)
    moment = now
    while moment + step < now + max_age:
        moment += step
        assert resolve(db, token, now=moment) is not None
    assert resolve(db, token, now=now + max_age) is None
    assert rows(db) == 0  # the dead row is removed, not just ignored


def test_idle_sessions_end_and_activity_keeps_them_alive(db):
    user_id = add_user(db, "dana")
    now = utcnow()
    idle = timedelta(seconds=db.console.idle_timeout_s)
    token, _ = start(db, user_id, now=now)
    assert resolve(db, token, now=now + idle - timedelta(seconds=1)) is not None
    # That request counted as activity, so the session outlives the first idle deadline.
    assert resolve(db, token, now=now + idle + timedelta(seconds=30)) is not None
    other, _ = start(db, user_id, now=now)
    assert resolve(db, other, now=now + idle) is None


def test_ending_sessions(db):
    user_id = add_user(db, "dana")
    other_id = add_user(db, "eli")
    a, _ = start(db, user_id)
    b, _ = start(db, user_id)
    c, _ = start(db, other_id)
    with session_scope(db) as session:
        auth.end_session(session, token=a)
    assert resolve(db, a) is None and resolve(db, b) is not None
    with session_scope(db) as session:
        auth.end_user_sessions(session, user_id=user_id)
    assert resolve(db, b) is None and resolve(db, c) is not None


def test_disabling_a_user_ends_their_sessions_at_once(db):
    user_id = add_user(db, "dana")
    add_user(db, "root", role="admin")
    token, _ = start(db, user_id)
    with session_scope(db) as session:
        auth.set_active(session, user=auth.get_user(session, user_id), active=False)
    assert resolve(db, token) is None and rows(db) == 0


def test_password_change_keeps_this_session_and_ends_the_others(db):
    user_id = add_user(db, "dana")
    here, _ = start(db, user_id)
    elsewhere, _ = start(db, user_id)
    with session_scope(db) as session:
        login = auth.resolve_session(session, settings=db, token=here)
        auth.change_password(
            session, settings=db, user=login.user, current_password=PASSWORD, new_password="a-brand-new-secret",
            keep_session=login.row,
        )
    assert resolve(db, here) is not None and resolve(db, elsewhere) is None


def test_expired_rows_are_swept_at_the_next_login(db):
    user_id = add_user(db, "dana")
    long_ago = utcnow() - timedelta(seconds=db.console.session_max_age_s + 10)
    start(db, user_id, now=long_ago)
    start(db, user_id, now=long_ago)
    assert rows(db) == 2
    start(db, user_id)
    assert rows(db) == 1


def test_csrf_token_check(db):
    user_id = add_user(db, "dana")
    token, csrf = start(db, user_id)
    other_token, other_csrf = start(db, user_id)
    with session_scope(db) as session:
        login = auth.resolve_session(session, settings=db, token=token)
        assert auth.csrf_matches(login, csrf)
        assert not auth.csrf_matches(login, other_csrf)
        assert not auth.csrf_matches(login, None) and not auth.csrf_matches(login, "")
        assert not auth.csrf_matches(login, csrf[:-1])
