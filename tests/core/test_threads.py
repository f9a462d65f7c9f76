"""Worker threads lower their own CPU priority so the event loop runs first; the main thread never does."""

from __future__ import annotations

import os
import threading

import pytest

from support_bot.core.threads import BACKGROUND_NICE, run_below_event_loop, thread_nice

pytestmark = pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread priority on this system")


def _in_a_thread(fn):
    out: dict = {}

    def run():
        out["value"] = fn()

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out["value"]


def test_a_worker_thread_lowers_itself_once_and_leaves_the_others_as_they_were():
    main_before = thread_nice()

    def work():
        before = thread_nice()
        first = run_below_event_loop()
        after_first = thread_nice()
        second = run_below_event_loop()
        return before, first, after_first, second, thread_nice()

    before, first, after_first, second, after_second = _in_a_thread(work)
    assert first is True and second is True
    assert after_first == min(19, before + BACKGROUND_NICE)
    # Once per thread: a pooled thread asked again on every step does not sink further.
    assert after_second == after_first
    assert thread_nice() == main_before
    # A thread started afterwards starts from the main thread's priority, not a lowered one.
    assert _in_a_thread(thread_nice) == main_before


def test_the_main_thread_is_never_lowered():
    before = thread_nice()
    assert run_below_event_loop() is False
    assert thread_nice() == before
