"""The in-process bus and its subscriptions, read from threads and from coroutines."""

from __future__ import annotations

import asyncio
import threading

from support_bot.live.events import CLOSED, RESYNC, InProcessBus, get_bus


def test_publish_reaches_subscribers_of_that_channel_only():
    bus = InProcessBus()
    a = bus.subscribe(["conv:a"])
    b = bus.subscribe(["conv:b"])
    both = bus.subscribe(["conv:a", "console"])
    bus.publish("conv:a", {"type": "event", "seq": 1})
    bus.publish("console", {"type": "event", "seq": 2})
    assert a.get(timeout=1) == {"type": "event", "seq": 1}
    assert a.get(timeout=0) is None
    assert b.get(timeout=0) is None
    assert [m["seq"] for m in both.drain()] == [1, 2]


def test_get_waits_for_a_message_from_another_thread():
    bus = InProcessBus()
    sub = bus.subscribe(["console"])
    publisher = threading.Thread(target=bus.publish, args=("console", {"type": "event", "seq": 7}))
    publisher.start()
    # No timeout: returns only because the other thread's message arrived.
    assert sub.get(timeout=None) == {"type": "event", "seq": 7}
    publisher.join()


def test_aget_is_woken_by_a_publish_from_a_thread():
    bus = InProcessBus()
    sub = bus.subscribe(["console"])

    async def scenario():
        waiting = asyncio.create_task(sub.aget(timeout=60))
        await asyncio.sleep(0)  # let the reader register before the message is sent
        await asyncio.to_thread(bus.publish, "console", {"type": "event", "seq": 3})
        return await waiting

    assert asyncio.run(scenario()) == {"type": "event", "seq": 3}


def test_aget_times_out_with_none_and_leaves_no_waiter():
    bus = InProcessBus()
    sub = bus.subscribe(["console"])
    assert asyncio.run(sub.aget(timeout=0.01)) is None
    bus.publish("console", {"type": "event", "seq": 1})
    assert asyncio.run(sub.aget(timeout=1)) == {"type": "event", "seq": 1}


def test_close_wakes_readers_and_unsubscribes():
    bus = InProcessBus()
    sub = bus.subscribe(["console"])

    async def scenario():
        waiting = asyncio.create_task(sub.aget(timeout=60))
        await asyncio.sleep(0)
        sub.close()
        return await waiting

    assert asyncio.run(scenario()) is CLOSED
    assert bus.subscriber_count() == 0
    bus.publish("console", {"type": "event", "seq": 1})
    assert sub.get(timeout=0) is CLOSED


def test_closing_the_bus_ends_every_subscription():
    bus = InProcessBus()
    subs = [bus.subscribe(["console"]), bus.subscribe(["conv:x"])]
    bus.close()
    assert [s.get(timeout=0) for s in subs] == [CLOSED, CLOSED]


def test_a_reader_far_behind_gets_one_resync_instead_of_the_backlog():
    bus = InProcessBus()
    sub = bus.subscribe(["console"])
    sub._max_pending = 3
    for seq in range(10):
        bus.publish("console", {"type": "event", "seq": seq})
    items = sub.drain()
    assert RESYNC in items
    assert len(items) <= 4
    assert items[-1] == {"type": "event", "seq": 9}


def test_get_bus_without_redis_is_one_in_process_bus(settings):
    bus = get_bus(settings)
    assert isinstance(bus, InProcessBus)
    assert get_bus(settings) is bus
    assert bus.healthy and bus.wait_ready()
