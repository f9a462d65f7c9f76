"""`support-bot users ...` and the first admin's one-time password at setup."""

from __future__ import annotations

import io
import json
import logging

from sqlalchemy import select

from support_bot.ops import audit, auth
from support_bot.cli import main
from support_bot.core.config import get_settings
from support_bot.core.db import session_scope
from support_bot.models import ConsoleSession, User


def one_time_password(stdout: str) -> str:
    """The password from the setup announcement: the indented line after the one that names the user."""
    lines = stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "first console user 'admin'" in line)
    return lines[at + 1].strip()


def user(username: str) -> User | None:
    with session_scope(get_settings()) as session:
        return session.scalar(select(User).where(User.username == username))


def can_log_in(username: str, password: str) -> bool:
    settings = get_settings()
    with session_scope(settings) as session:
        return auth.authenticate(session, settings=settings, username=username, password=password) is not None


def test_first_migrate_prints_the_admin_password_once_and_never_logs_it(capsys, caplog):
    caplog.set_level(logging.DEBUG)
    assert main(["migrate"]) == 0
    out, err = capsys.readouterr()
    password = one_time_password(out)
    assert len(password) >= 12 and password not in err
    assert all(password not in record.getMessage() for record in caplog.records)
    stored = user("admin")
    assert stored.role == "admin" and stored.must_change_password and password not in stored.password_hash
    assert can_log_in("admin", password)

    assert main(["migrate"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "newest schema" in err
    with session_scope(get_settings()) as session:
        assert session.scalars(select(User.username)).all() == ["admin"]


def test_users_create_prints_a_one_time_password(capsys):
    assert main(["migrate"]) == 0
    capsys.readouterr()
    assert main(["users", "create", "Dana", "--role", "ops", "--display-name", "Dana D."]) == 0
    out, err = capsys.readouterr()
    assert "created ops 'dana'" in err
    password = out.strip().rsplit(" ", 1)[-1]
    stored = user("dana")
    assert (stored.role, stored.display_name, stored.must_change_password) == ("ops", "Dana D.", True)
    assert can_log_in("dana", password)
    with session_scope(get_settings()) as session:
        entry = audit.entries(session, action="user.create", target_id=stored.id)[0]
        assert entry.actor_name == "system"


def test_users_create_with_a_password_from_stdin(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a-password-from-a-vault\n"))
    assert main(["users", "create", "bot-ops", "--role", "admin", "--password-stdin"]) == 0
    out, _ = capsys.readouterr()
    assert "a-password-from-a-vault" not in out and "one-time" not in out
    assert not user("bot-ops").must_change_password and can_log_in("bot-ops", "a-password-from-a-vault")


def test_users_create_refuses_bad_input_with_one_clear_line(capsys, monkeypatch):
    assert main(["users", "create", "dana"]) == 0
    capsys.readouterr()
    assert main(["users", "create", "DANA"]) == 2
    assert capsys.readouterr().err.strip() == "error: the username 'dana' is taken"
    assert main(["users", "create", "no spaces allowed"]) == 2
    assert "username" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "create", "eli", "--password-stdin"]) == 2
    err = capsys.readouterr().err
    assert "at least" in err and "Traceback" not in err
    assert user("eli") is None


def test_users_list(capsys):
    assert main(["migrate"]) == 0
    main(["users", "create", "dana"])
    main(["users", "disable", "dana"])
    capsys.readouterr()
    assert main(["users", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["username"], r["role"], r["active"]) for r in rows] == [("admin", "admin", True), ("dana", "agent", False)]
    assert all("password_hash" not in r for r in rows)
    assert main(["users", "list"]) == 0
    table = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert table[0][:3] == ["USERNAME", "ROLE", "STATUS"]
    assert [row[:3] for row in table[1:]] == [["admin", "admin", "active"], ["dana", "agent", "disabled"]]


def test_disable_ends_sessions_and_enable_restores_access(capsys):
    assert main(["migrate"]) == 0
    main(["users", "create", "dana"])
    password = capsys.readouterr().out.strip().rsplit(" ", 1)[-1]
    settings = get_settings()
    with session_scope(settings) as session:
        auth.start_session(session, settings=settings, user=auth.get_user_by_name(session, "dana"))
    assert main(["users", "disable", "dana"]) == 0
    assert "sessions have ended" in capsys.readouterr().err
    with session_scope(settings) as session:
        assert session.scalars(select(ConsoleSession)).all() == []
    assert not can_log_in("dana", password)
    assert main(["users", "enable", "dana"]) == 0
    assert can_log_in("dana", password)
    capsys.readouterr()
    assert main(["users", "disable", "nobody"]) == 2
    assert capsys.readouterr().err.strip() == "error: no user 'nobody'"


def test_set_role_keeps_one_admin(capsys):
    assert main(["migrate"]) == 0
    main(["users", "create", "dana"])
    capsys.readouterr()
    assert main(["users", "set-role", "dana", "admin"]) == 0
    assert user("dana").role == "admin"
    assert main(["users", "set-role", "admin", "agent"]) == 0
    assert main(["users", "set-role", "dana", "ops"]) == 2
    assert "at least one active admin must remain" in capsys.readouterr().err
    assert user("dana").role == "admin"


def test_reset_password_prints_a_new_one_time_password(capsys):
    assert main(["migrate"]) == 0
    first = one_time_password(capsys.readouterr().out)
    assert main(["users", "reset-password", "admin"]) == 0
    second = capsys.readouterr().out.strip().rsplit(" ", 1)[-1]
    assert second != first and can_log_in("admin", second) and not can_log_in("admin", first)
    assert user("admin").must_change_password


def test_users_commands_refuse_default_secrets_in_production(monkeypatch, capsys):
    monkeypatch.setenv("SUPPORT_BOT_ENV", "production")
    get_settings.cache_clear()
    assert main(["users", "list"]) == 2
    assert "SUPPORT_BOT_ADMIN_TOKEN" in capsys.readouterr().err


def test_first_migrate_says_where_the_password_file_is(capsys, caplog):
    caplog.set_level(logging.DEBUG)
    assert main(["migrate"]) == 0
    out, err = capsys.readouterr()
    password, saved = one_time_password(out), auth.first_admin_password_path(get_settings())
    assert f"It is also in {saved} (readable only by you)" in out and str(saved) not in err
    assert saved.read_text(encoding="utf-8").strip() == password
    assert all(password not in record.getMessage() for record in caplog.records)
    assert can_log_in("admin", password) and not saved.exists()
