"""Rate limits: the sliding window in memory and in Redis, and the public API's 429 answers."""

from __future__ import annotations

import threading
import uuid

import pytest
from fastapi.testclient import TestClient

from support_bot.core.config import Settings
from support_bot.core.ratelimit import (
    Limit,
    MemoryRateLimiter,
    RateLimited,
    RedisRateLimiter,
    check,
    make_rate_limiter,
)
from web.app import create_app
from web.errors import http_status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limit(key: str = "k", requests: int = 3, window_s: float = 60) -> Limit:
    return Limit("test", key, requests, window_s)


def test_memory_limiter_allows_up_to_the_limit_then_says_when_to_retry():
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    for _ in range(3):
        assert limiter.hit([limit()]).allowed
        clock.now += 10
    refused = limiter.hit([limit()])
    assert not refused.allowed and refused.limit.name == "test"
    # The first hit (at 1000) leaves the window at 1060; it is now 1030.
    assert refused.retry_after_s == pytest.approx(30)
    assert refused.retry_after_header == "30"
    assert limiter.hit([limit(key="other")]).allowed


def test_memory_limiter_window_slides():
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    assert limiter.hit([limit(requests=2)]).allowed  # t=1000
    clock.now = 1030
    assert limiter.hit([limit(requests=2)]).allowed  # t=1030
    clock.now = 1059
    assert not limiter.hit([limit(requests=2)]).allowed
    clock.now = 1061  # the first hit has left the window, the second has not
    assert limiter.hit([limit(requests=2)]).allowed
    refused = limiter.hit([limit(requests=2)])
    assert not refused.allowed and refused.retry_after_s == pytest.approx(29)


def test_a_refused_request_counts_against_none_of_its_limits():
    limiter = MemoryRateLimiter(Clock())
    per_ip, per_conv = limit("ip", requests=5), limit("conv", requests=1)
    assert limiter.hit([per_ip, per_conv]).allowed
    for _ in range(10):
        decision = limiter.hit([per_ip, per_conv])
        assert not decision.allowed and decision.limit.key == "conv"
    # Only the one accepted request counted against the IP.
    for _ in range(4):
        assert limiter.hit([per_ip]).allowed
    assert not limiter.hit([per_ip]).allowed


def test_memory_limiter_forgets_idle_keys():
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    for n in range(limiter.SWEEP_EVERY - 1):
        limiter.hit([limit(key=f"ip{n}", window_s=10)])
    clock.now += 11
    limiter.hit([limit(key="fresh", window_s=10)])
    assert list(limiter._hits) == ["fresh"]


def test_check_raises_a_friendly_429():
    limiter = MemoryRateLimiter(Clock())
    check(limiter, [limit(requests=1, window_s=90)], what="messages")
    with pytest.raises(RateLimited) as caught:
        check(limiter, [limit(requests=1, window_s=90)], what="messages")
    assert http_status(caught.value) == 429 and caught.value.retry_after_s == 90
    assert caught.value.detail == "You're sending messages faster than we can handle. Please wait 2 minutes and try again."


@pytest.fixture
def redis_limiters(redis_url):
    prefix = f"test-rl:{uuid.uuid4().hex}:"
    made = [RedisRateLimiter(redis_url, prefix=prefix) for _ in range(2)]
    yield made, prefix
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()
    for limiter in made:
        limiter.close()


@pytest.mark.redis
def test_redis_limiter_shares_counts_between_processes(redis_limiters, redis_url):
    (a, b), prefix = redis_limiters
    assert a.hit([limit(requests=2, window_s=30)]).allowed
    assert b.hit([limit(requests=2, window_s=30)]).allowed
    refused = a.hit([limit(requests=2, window_s=30)])
    assert not refused.allowed and 29 <= refused.retry_after_s <= 30
    assert b.hit([limit(key="other", requests=2, window_s=30)]).allowed
    import redis

    client = redis.Redis.from_url(redis_url)
    # Keys expire with their window, so idle clients leave nothing behind.
    assert 0 < client.pttl(f"{prefix}k") <= 30_000
    client.close()


@pytest.mark.redis
def test_redis_limiter_counts_a_refused_request_against_no_limit(redis_limiters):
    (a, _), _ = redis_limiters
    per_ip, per_conv = limit("ip", requests=3), limit("conv", requests=1)
    assert a.hit([per_ip, per_conv]).allowed
    decision = a.hit([per_ip, per_conv])
    assert not decision.allowed and decision.limit.key == "conv"
    assert a.hit([per_ip]).allowed and a.hit([per_ip]).allowed
    assert not a.hit([per_ip]).allowed


@pytest.mark.redis
def test_redis_limiter_is_atomic_under_concurrent_requests(redis_limiters):
    (a, b), _ = redis_limiters
    results: list[bool] = []
    lock = threading.Lock()

    def worker(limiter):
        for _ in range(10):
            allowed = limiter.hit([limit(requests=7)]).allowed
            with lock:
                results.append(allowed)

    threads = [threading.Thread(target=worker, args=(lim,)) for lim in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40 and results.count(True) == 7


def test_redis_limiter_keeps_limiting_in_memory_while_redis_is_down():
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", prefix="x:")
    assert limiter.hit([limit(requests=1)]).allowed
    assert not limiter.hit([limit(requests=1)]).allowed
    limiter.close()


def test_the_backend_follows_settings(settings):
    assert isinstance(make_rate_limiter(settings), MemoryRateLimiter)
    redis_settings = settings.model_copy(update={"redis_url": "redis://127.0.0.1:6379/15"})
    limiter = make_rate_limiter(redis_settings)
    assert isinstance(limiter, RedisRateLimiter)
    limiter.close()


def post_message(client: TestClient, conv: dict, text: str = "hello"):
    return client.post(
        f"/api/conversations/{conv['id']}/messages",
        json={"text": text},
        headers={"Authorization": f"Bearer {conv['token']}"},
    )


def test_the_api_limits_messages_per_conversation_with_429_and_retry_after(widget_settings):
    widget_settings.widget.messages_per_conversation = 2
    with TestClient(create_app(widget_settings)) as client:
        first, second = (client.post("/api/conversations", json={}).json() for _ in range(2))
        assert [post_message(client, first).status_code for _ in range(2)] == [200, 200]
        refused = post_message(client, first)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        body = refused.json()
        assert body["detail"].startswith("You're sending messages faster than we can handle. Please wait ")
        assert body["retry_after_s"] == int(refused.headers["retry-after"])
        # Another conversation from the same client is not held back by this one.
        assert post_message(client, second).status_code == 200
        # The refused message was not stored.
        history = client.get(
            f"/api/conversations/{first['id']}/messages", headers={"Authorization": f"Bearer {first['token']}"}
        ).json()["messages"]
        assert [m["role"] for m in history] == ["customer", "bot", "customer", "bot"]


def test_the_api_limits_new_conversations_and_messages_per_ip(widget_settings):
    widget_settings.widget.conversations_per_ip = 2
    widget_settings.widget.conversations_per_ip_window_s = 600
    widget_settings.widget.messages_per_ip = 3
    with TestClient(create_app(widget_settings)) as client:
        convs = [client.post("/api/conversations", json={}) for _ in range(3)]
        assert [r.status_code for r in convs] == [201, 201, 429]
        assert "new conversations" in convs[2].json()["detail"]
        a, b = convs[0].json(), convs[1].json()
        statuses = [post_message(client, conv).status_code for conv in (a, b, a, b)]
        assert statuses == [200, 200, 200, 429]


def test_other_routes_and_preflights_are_not_limited_and_limits_can_be_off(widget_settings):
    widget_settings.widget.requests_per_ip = 2
    with TestClient(create_app(widget_settings)) as client:
        assert [client.get("/api/widget/config").status_code for _ in range(3)] == [200, 200, 429]
        assert client.get("/healthz").status_code == 200
        assert client.get("/api/console/me").status_code == 401
        preflight = client.options(
            "/api/widget/config",
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status_code == 200
    widget_settings.widget.rate_limit_enabled = False
    with TestClient(create_app(widget_settings)) as client:
        assert {client.get("/api/widget/config").status_code for _ in range(5)} == {200}


@pytest.mark.redis
def test_web_processes_share_limits_through_redis(widget_settings, redis_url):
    widget_settings.redis_url = redis_url
    widget_settings.widget.rate_limit_key_prefix = f"test-rl:{uuid.uuid4().hex}:"
    widget_settings.widget.conversations_per_ip = 2
    app_a, app_b = create_app(widget_settings), create_app(widget_settings)
    assert isinstance(app_a.state.rate_limiter, RedisRateLimiter)
    with TestClient(app_a) as a, TestClient(app_b) as b:
        assert a.post("/api/conversations", json={}).status_code == 201
        assert b.post("/api/conversations", json={}).status_code == 201
        assert a.post("/api/conversations", json={}).status_code == 429
        assert b.post("/api/conversations", json={}).status_code == 429


def test_settings_build_limits_from_env(monkeypatch):
    monkeypatch.setenv("SUPPORT_BOT_WIDGET__MESSAGES_PER_IP", "7")
    monkeypatch.setenv("SUPPORT_BOT_WIDGET__CONVERSATIONS_PER_IP_WINDOW_S", "600")
    monkeypatch.setenv("SUPPORT_BOT_WIDGET__RATE_LIMIT_ENABLED", "false")
    s = Settings()
    assert (s.widget.messages_per_ip, s.widget.messages_per_ip_window_s) == (7, 60)
    assert (s.widget.conversations_per_ip, s.widget.conversations_per_ip_window_s) == (20, 600)
    assert s.widget.rate_limit_enabled is False
