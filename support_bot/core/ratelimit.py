"""Sliding-window rate limits: in this process's memory, or in Redis so that every web process counts together.

Kept over pyrate-limiter/slowapi: several keys' limits count all-or-none in one Lua script or lock, on Redis's clock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
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


class _Redis:
    """A Redis client for counting that is cheap when Redis is slow or silent (it accepts connections and never
    answers): each call waits at most TIMEOUT_S, and after a failure callers count in this process at once,
    trying Redis again only after a back-off that doubles up to RETRY_MAX_S."""

    TIMEOUT_S = 0.5
    RETRY_MAX_S = 30.0

    def __init__(self, url: str, *, what: str, clock=time.monotonic) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.errors = (redis.RedisError, OSError)
        # No retries inside the client: one bounded try, then the back-off below.
        self.client = redis.Redis.from_url(
            url, socket_timeout=self.TIMEOUT_S, socket_connect_timeout=self.TIMEOUT_S, retry=Retry(NoBackoff(), 0)
        )
        self._what = what
        self._clock = clock
        self._warned_at = float("-inf")
        self._retry_at = float("-inf")
        self._backoff = 0.0

    def available(self) -> bool:
        """False while backing off after a failure."""
        return self._clock() >= self._retry_at

    def failed(self, exc: Exception) -> None:
        now = self._clock()
        self._backoff = min(self.RETRY_MAX_S, max(1.0, self._backoff * 2))
        self._retry_at = now + self._backoff
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning("%s counted per process: Redis is unreachable (%s)", self._what, exc)

    def succeeded(self) -> None:
        self._backoff = 0.0

    def close(self) -> None:
        self.client.close()


class RedisRateLimiter:
    """Limits kept in Redis, shared by every web process; while Redis is unreachable, this process counts alone.

    Every public request counts here before it is served: a Redis that is slow or silent costs it at most one short
    wait per back-off (see _Redis), never a stall.
    """

    def __init__(
        self, url: str, *, prefix: str = "", fallback: MemoryRateLimiter | None = None, clock=time.monotonic
    ) -> None:
        self._redis = _Redis(url, what="rate limits", clock=clock)
        self._script = self._redis.client.register_script(_HIT_SCRIPT)
        self._prefix = prefix
        self._fallback = fallback or MemoryRateLimiter()

    def hit(self, limits: Sequence[Limit]) -> Decision:
        """Count one request against every limit, or against none when any of them refuses it."""
        if not limits:
            return Decision(True)
        if not self._redis.available():
            return self._fallback.hit(limits)
        args: list[str | int] = []
        for limit in limits:
            args += [limit.requests, max(1, int(limit.window_s * 1000))]
        args.append(uuid.uuid4().hex)
        try:
            allowed, index, wait_ms = self._script(keys=[self._prefix + limit.key for limit in limits], args=args)
        except self._redis.errors as exc:
            # Abuse limits must not take the chat down with Redis: count in this process until it is back.
            self._redis.failed(exc)
            return self._fallback.hit(limits)
        self._redis.succeeded()
        if allowed:
            return Decision(True)
        return Decision(False, max(int(wait_ms), 0) / 1000, limits[int(index) - 1])

    def close(self) -> None:
        self._redis.close()


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


# -- backing off after failures (password guessing) ----------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """After `free` failures on `key`, each further failure doubles the wait before the next try may be made: base_s,
    2 * base_s, ... up to max_s. The count is forgotten `forget_s` after the last failure, or when cleared."""

    name: str
    key: str
    free: int
    base_s: float
    max_s: float
    forget_s: float

    def wait_after(self, failures: int) -> float:
        """Seconds from the last failure until the next try, after `failures` of them."""
        if failures < self.free:
            return 0.0
        return min(self.max_s, self.base_s * 2 ** min(failures - self.free, 40))


class MemoryFailureCounter:
    """Failure counts in this process, at most `max_keys` of them (the oldest failure is forgotten first), so a flood
    of made-up names cannot grow memory without bound."""

    def __init__(self, clock=time.monotonic, *, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        # key -> (failures, time of the last one, when it is forgotten); oldest last failure first.
        self._counts: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def _entry(self, key: str, now: float) -> tuple[int, float]:
        entry = self._counts.get(key)
        if entry is None or entry[2] <= now:
            return 0, now
        return entry[0], entry[1]

    def wait(self, backoffs: Sequence[Backoff]) -> tuple[float, Backoff | None]:
        """Seconds until a try is allowed under every backoff (0 when now), and the one that holds it back longest."""
        now = self._clock()
        worst: tuple[float, Backoff | None] = (0.0, None)
        with self._lock:
            for backoff in backoffs:
                failures, last = self._entry(backoff.key, now)
                left = last + backoff.wait_after(failures) - now
                if left > worst[0]:
                    worst = (left, backoff)
        return worst

    def fail(self, backoffs: Sequence[Backoff]) -> None:
        """Count one failure against every backoff."""
        now = self._clock()
        with self._lock:
            for backoff in backoffs:
                failures, _last = self._entry(backoff.key, now)
                self._counts[backoff.key] = (failures + 1, now, now + backoff.forget_s)
                self._counts.move_to_end(backoff.key)
            while len(self._counts) > self._max_keys:
                self._counts.popitem(last=False)

    def clear(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._counts.pop(key, None)

    def __len__(self) -> int:
        return len(self._counts)


# Failure counts in hashes {n, last} on Redis's clock: FAIL counts one more for each key (ARGV: forget ms per key);
# READ returns Redis's time in ms and each key's n and last.
_FAIL_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'n', 1)
  redis.call('HSET', KEYS[i], 'last', now)
  redis.call('PEXPIRE', KEYS[i], ARGV[i])
end
return now
"""
_READ_SCRIPT = """
local t = redis.call('TIME')
local out = {tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'n', 'last')
  out[#out + 1] = tonumber(v[1]) or 0
  out[#out + 1] = tonumber(v[2]) or 0
end
return out
"""


class RedisFailureCounter:
    """Failure counts in Redis, shared by every web process; while Redis is unreachable, this process counts alone."""

    def __init__(self, url: str, *, prefix: str = "", fallback: MemoryFailureCounter | None = None) -> None:
        self._redis = _Redis(url, what="login failures")
        self._fail = self._redis.client.register_script(_FAIL_SCRIPT)
        self._read = self._redis.client.register_script(_READ_SCRIPT)
        self._prefix = prefix
        self._fallback = fallback or MemoryFailureCounter()

    def wait(self, backoffs: Sequence[Backoff]) -> tuple[float, Backoff | None]:
        if not backoffs or not self._redis.available():
            return self._fallback.wait(backoffs)
        try:
            values = self._read(keys=[self._prefix + b.key for b in backoffs])
        except self._redis.errors as exc:
            self._redis.failed(exc)
            return self._fallback.wait(backoffs)
        self._redis.succeeded()
        now_ms, worst = int(values[0]), (0.0, None)
        for i, backoff in enumerate(backoffs):
            failures, last_ms = int(values[1 + 2 * i]), int(values[2 + 2 * i])
            left = (last_ms - now_ms) / 1000 + backoff.wait_after(failures)
            if failures and left > worst[0]:
                worst = (left, backoff)
        # Failures counted here while Redis was away still hold their own back-off.
        local = self._fallback.wait(backoffs)
        return max(worst, local, key=lambda w: w[0])

    def fail(self, backoffs: Sequence[Backoff]) -> None:
        if not backoffs:
            return
        if self._redis.available():
            try:
                self._fail(
                    keys=[self._prefix + b.key for b in backoffs],
                    args=[max(1, int(b.forget_s * 1000)) for b in backoffs],
                )
                self._redis.succeeded()
                return
            except self._redis.errors as exc:
                self._redis.failed(exc)
        self._fallback.fail(backoffs)

    def clear(self, keys: Sequence[str]) -> None:
        self._fallback.clear(keys)
        if keys and self._redis.available():
            try:
                self._redis.client.delete(*[self._prefix + key for key in keys])
            except self._redis.errors as exc:
                self._redis.failed(exc)

    def close(self) -> None:
        self._redis.close()
