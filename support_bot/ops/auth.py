"""Console users: argon2id passwords, failed-login counts, server-side sessions with CSRF tokens, and user management.

Repeated failures never lock an account (anyone could lock out the admin that way): login_throttle.py slows them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.core.errors import Conflict, InvalidInput, NotFound
from support_bot.models import ConsoleSession, User, utcnow
from support_bot.ops import audit

ROLES = ("agent", "ops", "admin")
FIRST_ADMIN = "admin"
# Where the first admin's one-time password also waits, for operators who started the server without a terminal.
FIRST_ADMIN_PASSWORD_FILE = "admin-password.txt"
# The one message for every failed login, so the answer never tells whether a username exists.
LOGIN_FAILED = "wrong username or password"
MAX_PASSWORD_CHARS = 1024
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,63}$")
# Writing last_seen_at on every request would turn each page view into a write; a minute is precise enough.
_TOUCH_EVERY = timedelta(seconds=60)


def _new_hasher() -> PasswordHasher:
    """argon2id with RFC 9106's second recommended parameters (3 passes over 64 MiB, 4 lanes)."""
    return PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4, type=Type.ID)


_hasher = _new_hasher()
_dummy_hash: str | None = None


# -- passwords ---------------------------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """An argon2id hash of the password, with its own random salt."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    """A random one-time password (about 96 bits), easy to copy from a terminal."""
    return secrets.token_urlsafe(12)


def check_password_strength(password: str, *, settings: Settings) -> None:
    minimum = settings.console.min_password_length
    if len(password) < minimum:
        raise InvalidInput(f"the password must have at least {minimum} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidInput(f"the password must have at most {MAX_PASSWORD_CHARS} characters")
    if len(set(password)) < 4:
        raise InvalidInput("the password is too simple: use more different characters")


def _burn_time(password: str) -> None:
    """Verify against a throw-away hash so unknown usernames take as long to refuse as wrong passwords."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_urlsafe(16))
    verify_password(_dummy_hash, password)


# -- users -------------------------------------------------------------------------------------------------------


def normalize_username(username: str) -> str:
    name = (username or "").strip().lower()
    if not _USERNAME.match(name):
        raise InvalidInput(
            "the username must be 1-64 characters: letters, digits and . _ @ + - (starting with a letter or digit)"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"unknown role '{role}': use one of {', '.join(ROLES)}")
    return role


def user_payload(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name or user.username,
        "role": user.role,
        "active": user.active,
        "must_change_password": user.must_change_password,
        "locked": is_locked(user),
        "presence": user.presence,
        "capacity": user.capacity,
        "created_at": _iso(user.created_at),
        "last_login_at": _iso(user.last_login_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return _aware(moment).isoformat() if moment is not None else None


def get_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user not found")
    return user


def get_user_by_name(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == (username or "").strip().lower()))
    if user is None:
        raise NotFound(f"no user '{username}'")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def create_user(
    session: Session,
    *,
    settings: Settings,
    username: str,
    role: str,
    password: str | None = None,
    display_name: str = "",
    must_change_password: bool = True,
    actor: User | None = None,
) -> tuple[User, str | None]:
    """Add a user; without a password one is generated and returned (once) as a one-time password."""
    name = normalize_username(username)
    check_role(role)
    one_time = None
    if password is None:
        password = one_time = generate_password()
        must_change_password = True
    else:
        check_password_strength(password, settings=settings)
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise Conflict(f"the username '{name}' is taken")
    user = User(
        username=name,
        display_name=(display_name or "").strip()[:255],
        role=role,
        password_hash=hash_password(password),
        must_change_password=must_change_password,
    )
    session.add(user)
    session.flush()
    audit.record(
        session, actor=actor, action="user.create", target_type="user", target_id=user.id,
        detail={"username": name, "role": role},
    )
    return user, one_time


def _active_admins(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User).where(User.role == "admin", User.active.is_(True)))


def _keep_an_admin(session: Session, user: User) -> None:
    if user.role == "admin" and user.active and _active_admins(session) <= 1:
        raise Conflict("at least one active admin must remain")


def set_role(session: Session, *, user: User, role: str, actor: User | None = None) -> User:
    check_role(role)
    if role == user.role:
        return user
    if role != "admin":
        _keep_an_admin(session, user)
    before, user.role = user.role, role
    audit.record(
        session, actor=actor, action="user.role", target_type="user", target_id=user.id,
        detail={"username": user.username, "from": before, "to": role},
    )
    return user


def set_active(session: Session, *, user: User, active: bool, actor: User | None = None) -> User:
    """Disable (ending every session of the user at once) or enable a user."""
    if active == user.active:
        return user
    if not active:
        _keep_an_admin(session, user)
        end_user_sessions(session, user_id=user.id)
    else:
        # A fresh start: an old lockout or failure count should not greet a re-enabled user.
        user.failed_logins = 0
        user.locked_until = None
    user.active = active
    audit.record(
        session, actor=actor, action="user.enable" if active else "user.disable", target_type="user",
        target_id=user.id, detail={"username": user.username},
    )
    return user


def set_capacity(session: Session, *, user: User, capacity: int, actor: User | None = None) -> User:
    if not 0 <= capacity <= 100:
        raise InvalidInput("the capacity must be between 0 and 100 conversations")
    if capacity == user.capacity:
        return user
    before, user.capacity = user.capacity, capacity
    audit.record(
        session, actor=actor, action="user.capacity", target_type="user", target_id=user.id,
        detail={"username": user.username, "from": before, "to": capacity},
    )
    return user


def set_display_name(session: Session, *, user: User, display_name: str, actor: User | None = None) -> User:
    name = (display_name or "").strip()[:255]
    if name == user.display_name:
        return user
    before, user.display_name = user.display_name, name
    audit.record(
        session, actor=actor, action="user.display_name", target_type="user", target_id=user.id,
        detail={"username": user.username, "from": before, "to": name},
    )
    return user


def reset_password(session: Session, *, user: User, actor: User | None = None) -> str:
    """Give the user a new one-time password (returned once), end their sessions and lift any lockout."""
    password = generate_password()
    user.password_hash = hash_password(password)
    user.must_change_password = True
    user.failed_logins = 0
    user.locked_until = None
    end_user_sessions(session, user_id=user.id)
    audit.record(
        session, actor=actor, action="user.password_reset", target_type="user", target_id=user.id,
        detail={"username": user.username},
    )
    return password


def change_password(
    session: Session,
    *,
    settings: Settings,
    user: User,
    current_password: str,
    new_password: str,
    keep_session: ConsoleSession | None = None,
) -> None:
    """The user's own password change; every other session of theirs ends."""
    if not verify_password(user.password_hash, current_password or ""):
        raise InvalidInput("the current password is wrong")
    check_password_strength(new_password, settings=settings)
    if verify_password(user.password_hash, new_password):
        raise InvalidInput("the new password must differ from the current one")
    user.password_hash = hash_password(new_password)
    user.must_change_password = False
    q = delete(ConsoleSession).where(ConsoleSession.user_id == user.id)
    if keep_session is not None:
        q = q.where(ConsoleSession.token_hash != keep_session.token_hash)
    session.execute(q)
    audit.record(
        session, actor=user, action="user.password_change", target_type="user", target_id=user.id,
        detail={"username": user.username},
    )


# -- login and lockout -------------------------------------------------------------------------------------------


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands timezone-aware columns back naive; they were written in UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def is_locked(user: User, now: datetime | None = None) -> bool:
    until = _aware(user.locked_until)
    return until is not None and until > (now or utcnow())


def authenticate(
    session: Session, *, settings: Settings, username: str, password: str, now: datetime | None = None
) -> User | None:
    """The user when the password is right and the account may log in; None otherwise.

    Failures are counted in the caller's session, which must commit even when None comes back.
    """
    now = now or utcnow()
    try:
        name = normalize_username(username)
    except InvalidInput:
        _burn_time(password or "")
        return None
    user = session.scalar(select(User).where(User.username == name))
    if user is None:
        _burn_time(password or "")
        return None
    if not user.active:
        # Checked like any other attempt, so a disabled account answers in the same time.
        verify_password(user.password_hash, password or "")
        return None
    if not verify_password(user.password_hash, password or ""):
        _count_failure(session, settings=settings, user=user, now=now)
        return None
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    if user.username == FIRST_ADMIN:
        # The admin is in, so the password file has done its job; a clear-text password should not outlive that.
        discard_first_admin_password(settings)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def _count_failure(session: Session, *, settings: Settings, user: User, now: datetime) -> None:
    # One atomic increment, so parallel guesses cannot slip under the count by overwriting each other's.
    session.execute(update(User).where(User.id == user.id).values(failed_logins=User.failed_logins + 1))
    session.refresh(user, ["failed_logins"])
    if user.failed_logins == settings.console.lockout_attempts:
        # Worth an admin's attention; the account stays open to its owner (login_throttle.py slows the guessing).
        audit.record(
            session, actor=None, action="user.login_failures", target_type="user", target_id=user.id,
            detail={"username": user.username, "attempts": user.failed_logins, "at": now.isoformat()},
        )


# -- sessions ----------------------------------------------------------------------------------------------------


@dataclass
class ConsoleLogin:
    """A resolved console session: the user and the server-side row (which holds the CSRF token)."""

    user: User
    row: ConsoleSession

    @property
    def csrf_token(self) -> str:
        return self.row.csrf_token


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(
    session: Session,
    *,
    settings: Settings,
    user: User,
    ip: str | None = None,
    user_agent: str | None = None,
    now: datetime | None = None,
) -> tuple[str, ConsoleLogin]:
    """A new random session token (returned once, for the cookie) and its row; only the token's hash is stored."""
    now = now or utcnow()
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(
        token_hash=token_hash(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(seconds=settings.console.session_max_age_s),
        ip=(ip or None) and ip[:64],
        user_agent=(user_agent or None) and user_agent[:512],
    )
    session.add(row)
    session.flush()
    return token, ConsoleLogin(user=user, row=row)


def resolve_session(
    session: Session, *, settings: Settings, token: str | None, now: datetime | None = None
) -> ConsoleLogin | None:
    """The login behind a cookie token, or None when it is unknown, expired, idle too long or its user disabled."""
    if not token or len(token) > 256:
        return None
    now = now or utcnow()
    row = session.get(ConsoleSession, token_hash(token))
    if row is None:
        return None
    user = session.get(User, row.user_id)
    idle_limit = _aware(row.last_seen_at) + timedelta(seconds=settings.console.idle_timeout_s)
    if user is None or not user.active or _aware(row.expires_at) <= now or idle_limit <= now:
        session.delete(row)
        return None
    if now - _aware(row.last_seen_at) >= _TOUCH_EVERY:
        row.last_seen_at = now
    return ConsoleLogin(user=user, row=row)


def end_session(session: Session, *, token: str | None) -> None:
    if token:
        session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash(token)))


def end_user_sessions(session: Session, *, user_id: str) -> None:
    session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))


def csrf_matches(login: ConsoleLogin, provided: str | None) -> bool:
    return bool(provided) and hmac.compare_digest(login.csrf_token.encode(), provided.encode())


# -- setup -------------------------------------------------------------------------------------------------------


def ensure_first_admin(settings: Settings) -> str | None:
    """Create user `admin` with a one-time password when there are no users yet; the password, or None."""
    try:
        with session_scope(settings) as session:
            if session.scalar(select(User.id).limit(1)) is not None:
                return None
            _user, password = create_user(
                session, settings=settings, username=FIRST_ADMIN, role="admin", display_name="Administrator"
            )
    except (IntegrityError, Conflict):
        # Another process created it between our check and insert; that process shows the password.
        return None
    _write_first_admin_password(settings, password)
    return password


def first_admin_password_path(settings: Settings) -> Path:
    """Where the first admin's one-time password is kept until the admin's first login."""
    return (settings.data_dir / FIRST_ADMIN_PASSWORD_FILE).resolve()


def _write_first_admin_password(settings: Settings, password: str) -> None:
    path = first_admin_password_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A stale file from an earlier database goes first, so O_EXCL can create ours with owner-only rights from
        # the start: there is no moment when another user could open it.
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f"{password}\n")
    except OSError:
        # A read-only data dir or a full disk must not stop the first start; stdout still has the password, and
        # a half-written file must not pass for the real one.
        discard_first_admin_password(settings)


def discard_first_admin_password(settings: Settings) -> None:
    """Delete the first admin's password file, if it is still there."""
    try:
        first_admin_password_path(settings).unlink(missing_ok=True)
    except OSError:
        # Failing to delete must not fail the login; the next login of the admin tries again.
        pass
