"""Sliding-window rate limits: in this process's memory, or in Redis so that every web process counts together.

Kept over pyrate-limiter/slowapi: several keys' limits count all-or-none in one Lua script or lock, on Redis's clock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from support_bot.core.config import Settings
from support_bot.core.errors import SupportBotError

log = logging.getLogger(__name__)


class RateLimited(SupportBotError):
    """Too many requests; `retry_after_s` says when the next one will be accepted."""

    def __init__(self, detail: str, *, retry_after_s: int):
        super().__init__(detail)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Limit:
    """At most `requests` hits on `key` in any `window_s` seconds; `name` says which limit it is."""

    name: str
    key: str
    requests: int
    window_s: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # Seconds until the refused request would be accepted (0 when allowed).
    retry_after_s: float = 0.0
    # The limit that refused it.
    limit: Limit | None = None

    @property
    def retry_after_header(self) -> str:
        """Retry-After as whole seconds, at least 1, never earlier than the limit allows."""
        return str(max(1, math.ceil(self.retry_after_s)))


class MemoryRateLimiter:
    """Limits kept in this process: right for one web process (the embedded default)."""

    # Keys untouched for longer than their window are dropped every this many hits, bounding memory.
    SWEEP_EVERY = 1000

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[str, tuple[float, deque[float]]] = {}
        self._lock = threading.Lock()
        self._since_sweep = 0

    def hit(self, limits: Sequence[Limit]) -> Decision:
        """Count one request against every limit, or against none when any of them refuses it."""
        now = self._clock()
        with self._lock:
            self._maybe_sweep(now)
            windows = []
            for limit in limits:
                entry = self._hits.get(limit.key)
                stamps = entry[1] if entry else deque()
                while stamps and stamps[0] <= now - limit.window_s:
                    stamps.popleft()
                if len(stamps) >= limit.requests:
                    # The oldest hit in the window must age out before there is room for one more.
                    wait = stamps[len(stamps) - limit.requests] + limit.window_s - now
                    return Decision(False, max(wait, 0.0), limit)
                windows.append((limit, stamps))
            for limit, stamps in windows:
                stamps.append(now)
                self._hits[limit.key] = (limit.window_s, stamps)
        return Decision(True)

    def _maybe_sweep(self, now: float) -> None:
        self._since_sweep += 1
        if self._since_sweep < self.SWEEP_EVERY:
            return
        self._since_sweep = 0
        for key in [k for k, (window, stamps) in self._hits.items() if not stamps or stamps[-1] <= now - window]:
            del self._hits[key]

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


# Sliding-window log in sorted sets, all limits checked and counted in one atomic step. The clock is Redis's own,
# so web processes whose clocks disagree still share one window. Returns {allowed, index of the refusing limit,
# milliseconds until it has room}.
_HIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
for i = 1, n do
  local limit = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[i])
  if count >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], count - limit, count - limit, 'WITHSCORES')
    return {0, i, tonumber(oldest[2]) + window - now}
  end
end
local member = ARGV[2 * n + 1]
for i = 1, n do
  local window = tonumber(ARGV[2 * i])
  redis.call('ZADD', KEYS[i], now, member)
  redis.call('PEXPIRE', KEYS[i], window)
end
return {1, 0, 0}
"""


class RedisRateLimiter:
    """Limits kept in Redis, shared by every web process; while Redis is unreachable, this process counts alone."""

    def __init__(self, url: str, *, prefix: str = "", fallback: MemoryRateLimiter | None = None) -> None:
        import redis

        self._errors = (redis.RedisError, OSError)
        self._client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._script = self._client.register_script(_HIT_SCRIPT)
        self._prefix = prefix
        self._fallback = fallback or MemoryRateLimiter()
        self._warned_at = 0.0

    def hit(self, limits: Sequence[Limit]) -> Decision:
        """Count one request against every limit, or against none when any of them refuses it."""
        if not limits:
            return Decision(True)
        args: list[str | int] = []
        for limit in limits:
            args += [limit.requests, max(1, int(limit.window_s * 1000))]
        args.append(uuid.uuid4().hex)
        try:
            allowed, index, wait_ms = self._script(keys=[self._prefix + limit.key for limit in limits], args=args)
        except self._errors as exc:
            # Abuse limits must not take the chat down with Redis: count in this process until it is back.
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning("rate limits counted per process: Redis is unreachable (%s)", exc)
            return self._fallback.hit(limits)
        if allowed:
            return Decision(True)
        return Decision(False, max(int(wait_ms), 0) / 1000, limits[int(index) - 1])

    def close(self) -> None:
        self._client.close()


def make_rate_limiter(settings: Settings) -> MemoryRateLimiter | RedisRateLimiter:
    """Redis-backed when redis_url is set, in this process's memory otherwise."""
    if settings.redis_url:
        return RedisRateLimiter(settings.redis_url, prefix=settings.widget.rate_limit_key_prefix)
    return MemoryRateLimiter()


def wait_words(seconds: float) -> str:
    """"30 seconds", "2 minutes": how long to wait, as a customer is told."""
    seconds = max(1, math.ceil(seconds))
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minutes"


def check(limiter: MemoryRateLimiter | RedisRateLimiter, limits: Sequence[Limit], *, what: str) -> None:
    """Count a request; RateLimited (429, with a friendly message naming the wait) when a limit refuses it."""
    decision = limiter.hit(limits)
    if decision.allowed:
        return
    retry = int(decision.retry_after_header)
    raise RateLimited(
        f"You're sending {what} faster than we can handle. Please wait {wait_words(retry)} and try again.",
        retry_after_s=retry,
    )
