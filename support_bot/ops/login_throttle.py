"""Throttling console logins: password guessing slows down, and nobody can lock someone else out of their account.

Two back-offs, each doubling the wait after a number of free failures:

- per client address, over every account it tries: it only ever holds back the address that keeps failing;
- per account, over every client that has not logged in to that account before. A browser that has (it holds a
  signed device cookie for the account, set at its last successful login; changing the admin token, which signs
  them, makes every browser a new one) is never held back by it, so a stranger
  who fails on purpose against "admin" slows down strangers only; and its wait is capped at ACCOUNT_MAX_WAIT_S.

While a back-off holds, attempts are refused before the password is looked at (so they cannot be used to guess),
with the same answer whether or not the account exists.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from support_bot.core.config import Settings
from support_bot.core.ratelimit import (
    Backoff,
    MemoryFailureCounter,
    RateLimited,
    RedisFailureCounter,
    wait_words,
)

# The cookie naming the account a browser last logged in to, signed with the server's secret key.
DEVICE_COOKIE = "support_bot_device"
DEVICE_MAX_AGE_S = 180 * 24 * 3600
# Failures from one address before its back-off starts: more than one person's typos, fewer than a guessing run.
CLIENT_FREE_FAILURES = 10
# The longest an account's back-off makes a not-yet-trusted browser wait: a slowdown, never a lock-out.
ACCOUNT_MAX_WAIT_S = 60.0
BASE_WAIT_S = 1.0


def _account_key(username: str) -> str:
    # Hashed: any text may be typed as a username, and each must count the same (known or not).
    name = " ".join((username or "").split()).lower()[:255]
    return "login:acct:" + hashlib.sha256(name.encode()).hexdigest()[:32]


def _device_signature(settings: Settings, username: str, nonce: str) -> str:
    # Keyed with the server's admin token (every web process shares it; production refuses a default one), through
    # a derived key so that nothing signed here could ever stand for the token itself.
    key = hmac.new(settings.admin_token.encode(), b"console-login-device", hashlib.sha256).digest()
    name = " ".join((username or "").split()).lower()
    return hmac.new(key, f"{name}:{nonce}".encode(), hashlib.sha256).hexdigest()[:40]


def device_cookie(settings: Settings, username: str) -> str:
    """The value of a new device cookie for a browser that just logged in as `username`."""
    nonce = secrets.token_urlsafe(12)
    return f"{nonce}.{_device_signature(settings, username, nonce)}"


def device_trusted(settings: Settings, cookie: str | None, username: str) -> bool:
    """Whether the browser's device cookie says it logged in as `username` before."""
    if not cookie or len(cookie) > 200 or not cookie.isascii():
        return False
    nonce, _, signature = cookie.partition(".")
    if not nonce or not signature:
        return False
    return hmac.compare_digest(_device_signature(settings, username, nonce).encode(), signature.encode())


class LoginThrottle:
    """The two back-offs of console logins, counted in this process or (with Redis) across every web process."""

    def __init__(self, settings: Settings, counter: MemoryFailureCounter | RedisFailureCounter | None = None):
        self.settings = settings
        if counter is None:
            counter = (
                RedisFailureCounter(settings.redis_url, prefix=settings.widget.rate_limit_key_prefix)
                if settings.redis_url
                else MemoryFailureCounter()
            )
        self.counter = counter

    def _backoffs(self, *, client: str, username: str, trusted: bool) -> list[Backoff]:
        console = self.settings.console
        forget = console.lockout_minutes * 60.0
        backoffs = [
            Backoff(
                "client", f"login:ip:{(client or 'unknown')[:64]}", CLIENT_FREE_FAILURES, BASE_WAIT_S,
                max_s=forget, forget_s=forget,
            )
        ]
        if not trusted:
            backoffs.append(
                Backoff(
                    "account", _account_key(username), console.lockout_attempts, BASE_WAIT_S,
                    max_s=min(ACCOUNT_MAX_WAIT_S, forget), forget_s=forget,
                )
            )
        return backoffs

    def check(self, *, client: str, username: str, trusted: bool) -> None:
        """RateLimited (with the wait) while a back-off holds this attempt back."""
        wait, backoff = self.counter.wait(self._backoffs(client=client, username=username, trusted=trusted))
        if backoff is None or wait <= 0:
            return
        retry = max(1, int(wait + 0.999))
        raise RateLimited(
            f"Too many failed logins. Please wait {wait_words(retry)} and try again.", retry_after_s=retry
        )

    def failed(self, *, client: str, username: str, trusted: bool) -> None:
        self.counter.fail(self._backoffs(client=client, username=username, trusted=trusted))

    def succeeded(self, *, client: str, username: str) -> None:
        """The right password: this address and this account start afresh."""
        self.counter.clear([b.key for b in self._backoffs(client=client, username=username, trusted=False)])
