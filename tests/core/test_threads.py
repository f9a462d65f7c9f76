"""Worker threads lower their own CPU priority so the event loop runs first; the main thread never does."""

from __future__ import annotations

import os
import threading

import pytest

from support_bot.core.threads import BACKGROUND_NICE, run_below_event_loop

def thread_nice() -> int:
    """The calling thread's nice value (Linux keeps one per thread)."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


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


def test_torch_work_on_a_thread_that_asked_runs_on_that_thread_alone_and_nowhere_else():
    torch = pytest.importorskip("torch")
    from support_bot.core.threads import torch_on_one_thread

    main_before = torch.get_num_threads()

    def work():
        before = torch.get_num_threads()
        ok = torch_on_one_thread()
        return before, ok, torch.get_num_threads(), torch_on_one_thread(), float(torch.ones(64, 64).sum())

    before, ok, after, again, total = _in_a_thread(work)
    if not ok:
        pytest.skip("torch's OpenMP runtime is not where this build keeps it")
    assert after == 1 and again is True and total == 4096.0
    # Only that thread: the caller, and a thread started later (a model's scheduler), keep torch's own count.
    assert torch.get_num_threads() == main_before
    assert _in_a_thread(torch.get_num_threads) == main_before
    assert before == main_before


def test_for_a_block_only_torch_runs_on_one_thread_and_the_count_comes_back():
    torch = pytest.importorskip("torch")
    from support_bot.core.threads import torch_on_one_thread_while

    def work():
        before = torch.get_num_threads()
        with torch_on_one_thread_while() as ok:
            inside = torch.get_num_threads()
        return ok, before, inside, torch.get_num_threads()

    ok, before, inside, after = _in_a_thread(work)
    if not ok:
        pytest.skip("torch's OpenMP runtime is not where this build keeps it")
    assert inside == 1 and after == before


def test_small_torch_work_off_the_main_thread_runs_on_one_thread_but_a_batch_job_keeps_every_core():
    torch = pytest.importorskip("torch")
    from support_bot.core.threads import run_as_batch_job, torch_threads_for_small_work

    main_before = torch.get_num_threads()
    torch_threads_for_small_work()  # a command's main thread keeps its cores
    assert torch.get_num_threads() == main_before

    def small():
        torch_threads_for_small_work()
        return torch.get_num_threads()

    def batch(scale):
        torch_threads_for_small_work()
        return torch.get_num_threads() * scale

    if _in_a_thread(small) != 1:
        pytest.skip("torch's OpenMP runtime is not where this build keeps it")
    assert _in_a_thread(lambda: run_as_batch_job(batch, 1)) == main_before
    assert run_as_batch_job(batch, scale=3) == 3 * main_before


def test_a_batch_job_raises_its_error_in_the_caller():
    from support_bot.core.threads import run_as_batch_job

    def fail():
        raise ValueError("bad file")

    with pytest.raises(ValueError, match="bad file"):
        run_as_batch_job(fail)
