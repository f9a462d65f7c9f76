"""Bearer tokens stored as hashes, the signature a host site gives an identified customer, and the admin token a
development server makes for itself."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from support_bot.core.config import DEV_SECRET, Settings
from support_bot.core.errors import ConfigurationError

ADMIN_TOKEN_FILE = "admin-token.txt"


def hash_token(token: str) -> str:
    """What is stored of a bearer token: its SHA-256, so a database dump does not hand out sessions."""
    return hashlib.sha256(token.encode()).hexdigest()


def sign_customer_id(customer_id: str, secret: str) -> str:
    """The signature a host site computes for an identified customer: hex HMAC-SHA256 of the id."""
    return hmac.new(secret.encode(), customer_id.encode(), hashlib.sha256).hexdigest()


def is_loopback(host: str | None) -> bool:
    """Whether a client address is this machine's own (127.0.0.0/8, ::1, IPv4-mapped loopback)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def uses_default_admin_token(settings: Settings) -> bool:
    """True for a development server still on the published default admin token, which anyone could send."""
    return settings.env == "development" and hmac.compare_digest(settings.admin_token, DEV_SECRET)


def admin_token_path(settings: Settings) -> Path:
    """Where a development server keeps the admin token it made for itself."""
    return (settings.data_dir / ADMIN_TOKEN_FILE).resolve()


def own_admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin token a development server uses instead of the default: (token, made now).

    Made once with 32 random bytes and kept in <data_dir>/admin-token.txt, readable only by its owner, so a restart
    keeps it; processes starting together on one data dir agree on one token. When the data dir cannot keep it, a
    new token serves this run only (the caller shows it).
    """
    path = admin_token_path(settings)
    if path.exists():
        return _read_admin_token(path), False
    token = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        # Written in full under a private name with owner-only rights from the start, then linked into place: the
        # link never replaces a token another process put there first, and nobody reads a half-written file.
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(f"{token}\n")
            os.link(draft, path)
        finally:
            draft.unlink(missing_ok=True)
    except FileExistsError:
        return _read_admin_token(path), False
    except OSError:
        # A read-only data dir (or one without hard links) must not stop the start; the token serves this run.
        return token, True
    return token, True


def _read_admin_token(path: Path) -> str:
    token = path.read_text(encoding="utf-8").strip()
    if len(token) < 16 or hmac.compare_digest(token, DEV_SECRET):
        raise ConfigurationError(
            f"{path} does not hold a usable admin token (16+ characters, not the default): delete it to have a new "
            "one made, or set SUPPORT_BOT_ADMIN_TOKEN"
        )
    return token
