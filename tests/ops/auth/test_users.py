"""User management: creation, roles, access, password resets, the first admin, and their audit entries."""

from __future__ import annotations

import os
import stat

import pytest
from sqlalchemy import select

from support_bot.core.db import session_scope
from support_bot.core.errors import Conflict, InvalidInput, NotFound
from support_bot.models import User
from support_bot.ops import audit, auth
from tests.conftest import PASSWORD, add_user


def actions(settings, target_id=None):
    with session_scope(settings) as session:
        return [(e.action, e.actor_name) for e in reversed(audit.entries(session, target_id=target_id))]


def get(settings, user_id) -> User:
    with session_scope(settings) as session:
        return session.get(User, user_id)


def test_create_with_a_generated_one_time_password(db):
    admin_id = add_user(db, "root", role="admin", display_name="Root")
    with session_scope(db) as session:
        admin = session.get(User, admin_id)
        user, one_time = auth.create_user(
            session, settings=db, username=" Dana@Example.com ", role="ops", display_name="Dana", actor=admin
        )
        user_id = user.id
    stored = get(db, user_id)
    assert stored.username == "dana@example.com" and stored.role == "ops" and stored.must_change_password
    assert one_time and one_time not in stored.password_hash and auth.verify_password(stored.password_hash, one_time)
    assert actions(db, user_id) == [("user.create", "Root")]


def test_create_with_a_chosen_password(db):
    user_id = add_user(db, "dana")
    stored = get(db, user_id)
    assert not stored.must_change_password and auth.verify_password(stored.password_hash, PASSWORD)


@pytest.mark.parametrize(
    ("username", "role", "password", "error"),
    [
        ("", "agent", None, InvalidInput),
        ("has space", "agent", None, InvalidInput),
        ("-dash-first", "agent", None, InvalidInput),
        ("x" * 65, "agent", None, InvalidInput),
        ("dana", "owner", None, InvalidInput),
        ("dana", "agent", "short", InvalidInput),
        ("taken", "agent", None, Conflict),
        ("TAKEN", "agent", None, Conflict),
    ],
)
def test_invalid_new_users_are_refused(db, username, role, password, error):
    add_user(db, "taken")
    with pytest.raises(error), session_scope(db) as session:
        auth.create_user(session, settings=db, username=username, role=role, password=password)
    with session_scope(db) as session:
        assert session.scalars(select(User.username)).all() == ["taken"]


def test_role_changes_are_audited_and_one_admin_always_remains(db):
    root = add_user(db, "root", role="admin")
    dana = add_user(db, "dana")
    with session_scope(db) as session:
        auth.set_role(session, user=auth.get_user(session, dana), role="admin", actor=auth.get_user(session, root))
    with session_scope(db) as session:
        auth.set_role(session, user=auth.get_user(session, root), role="ops", actor=auth.get_user(session, dana))
    assert get(db, root).role == "ops"
    with pytest.raises(Conflict, match="admin must remain"), session_scope(db) as session:
        auth.set_role(session, user=auth.get_user(session, dana), role="agent")
    with pytest.raises(Conflict), session_scope(db) as session:
        auth.set_active(session, user=auth.get_user(session, dana), active=False)
    assert get(db, dana).role == "admin" and get(db, dana).active
    with session_scope(db) as session:
        entry = audit.entries(session, action="user.role", target_id=root)[0]
        assert entry.detail == {"username": "root", "from": "admin", "to": "ops"} and entry.actor_name == "dana"
    with pytest.raises(InvalidInput), session_scope(db) as session:
        auth.set_role(session, user=auth.get_user(session, dana), role="boss")


def test_disable_enable_and_other_changes_are_audited(db):
    add_user(db, "root", role="admin")
    dana = add_user(db, "dana")
    with session_scope(db) as session:
        user = auth.get_user(session, dana)
        auth.set_active(session, user=user, active=False)
        auth.set_active(session, user=user, active=False)  # no change, no entry
    assert not get(db, dana).active
    with session_scope(db) as session:
        user = auth.get_user(session, dana)
        auth.set_active(session, user=user, active=True)
        auth.set_capacity(session, user=user, capacity=2)
        auth.set_display_name(session, user=user, display_name="Dana D.")
    assert (get(db, dana).capacity, get(db, dana).display_name) == (2, "Dana D.")
    assert [a for a, _ in actions(db, dana)] == [
        "user.create", "user.disable", "user.enable", "user.capacity", "user.display_name",
    ]
    with pytest.raises(InvalidInput), session_scope(db) as session:
        auth.set_capacity(session, user=auth.get_user(session, dana), capacity=-1)


def test_password_reset_gives_a_new_one_time_password_and_clears_the_failure_count(db):
    dana = add_user(db, "dana")
    for _ in range(db.console.lockout_attempts):
        with session_scope(db) as session:
            auth.authenticate(session, settings=db, username="dana", password="wrong-password")
    assert get(db, dana).failed_logins == db.console.lockout_attempts
    with session_scope(db) as session:
        one_time = auth.reset_password(session, user=auth.get_user(session, dana))
    stored = get(db, dana)
    assert stored.must_change_password and not auth.is_locked(stored) and stored.failed_logins == 0
    assert not auth.verify_password(stored.password_hash, PASSWORD)
    with session_scope(db) as session:
        assert auth.authenticate(session, settings=db, username="dana", password=one_time) is not None
    assert ("user.password_reset", "system") in actions(db, dana)


def test_own_password_change_needs_the_current_one(db):
    dana = add_user(db, "dana", must_change_password=True)
    with pytest.raises(InvalidInput, match="current password"), session_scope(db) as session:
        auth.change_password(
            session, settings=db, user=auth.get_user(session, dana), current_password="nope",
            new_password="another-good-one",
        )
    with pytest.raises(InvalidInput, match="differ"), session_scope(db) as session:
        auth.change_password(
            session, settings=db, user=auth.get_user(session, dana), current_password=PASSWORD, new_password=PASSWORD
        )
    with session_scope(db) as session:
        auth.change_password(
            session, settings=db, user=auth.get_user(session, dana), current_password=PASSWORD,
            new_password="another-good-one",
        )
    stored = get(db, dana)
    assert not stored.must_change_password and auth.verify_password(stored.password_hash, "another-good-one")
    assert actions(db, dana)[-1] == ("user.password_change", "dana")


def test_lookups(db):
    dana = add_user(db, "dana")
    with session_scope(db) as session:
        assert auth.get_user_by_name(session, "DANA").id == dana
        with pytest.raises(NotFound):
            auth.get_user_by_name(session, "nobody")
        with pytest.raises(NotFound):
            auth.get_user(session, "0" * 32)


def test_first_admin_is_created_once_with_a_one_time_password(any_db):
    settings = any_db
    password = auth.ensure_first_admin(settings)
    assert password and auth.ensure_first_admin(settings) is None
    with session_scope(settings) as session:
        users = session.scalars(select(User)).all()
        assert [(u.username, u.role, u.must_change_password) for u in users] == [("admin", "admin", True)]
        assert password not in users[0].password_hash
        assert auth.authenticate(session, settings=settings, username="admin", password=password) is not None
        entry = audit.entries(session, action="user.create")[0]
        assert entry.actor_name == "system" and entry.target_id == users[0].id


def test_no_first_admin_when_users_exist(db):
    add_user(db, "dana")
    assert auth.ensure_first_admin(db) is None
    with session_scope(db) as session:
        assert session.scalars(select(User.username)).all() == ["dana"]


def test_first_admin_password_waits_in_an_owner_only_file_until_the_first_login(db):
    path = auth.first_admin_password_path(db)
    assert path == (db.data_dir / "admin-password.txt").resolve() and not path.exists()
    password = auth.ensure_first_admin(db)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8").strip() == password
    with session_scope(db) as session:
        # A wrong password is no login: the file stays for the admin to read.
        assert auth.authenticate(session, settings=db, username="admin", password="not-it") is None
        assert path.exists()
        assert auth.authenticate(session, settings=db, username="admin", password=password) is not None
    assert not path.exists()
    # Logging in again (the file long gone) is no error.
    with session_scope(db) as session:
        assert auth.authenticate(session, settings=db, username="admin", password=password) is not None


def test_first_admin_file_is_created_owner_only_even_under_a_lax_umask(db):
    stale = auth.first_admin_password_path(db)
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("an old password\n", encoding="utf-8")
    stale.chmod(0o644)
    old_umask = os.umask(0)
    try:
        password = auth.ensure_first_admin(db)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(stale.stat().st_mode) == 0o600 and stale.read_text(encoding="utf-8") == f"{password}\n"


def test_other_users_logins_leave_the_first_admin_file(db):
    auth.ensure_first_admin(db)
    add_user(db, "dana")
    with session_scope(db) as session:
        assert auth.authenticate(session, settings=db, username="dana", password=PASSWORD) is not None
    assert auth.first_admin_password_path(db).exists()


def test_an_unwritable_data_dir_still_creates_the_first_admin(db, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise PermissionError("read-only data dir")

    monkeypatch.setattr(auth.os, "open", refuse)
    assert auth.ensure_first_admin(db)
    assert not auth.first_admin_password_path(db).exists()
