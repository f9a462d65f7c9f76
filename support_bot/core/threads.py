"""Worker threads that give the CPU to the event loop first.

A served app answers every request on one event-loop thread; the customer turns' own work (retrieval, guards,
grounding, reading the model's stream) runs on worker threads. Under a crowd of answers those threads keep both cores
busy, and the event loop then waits in the kernel's run queue behind them each time it wakes: health checks and every
other request wait with it. A worker thread lowers its own scheduling priority (its nice value, which Linux keeps per
thread) once, so that the kernel runs the event loop as soon as it has something to do. The work still gets all the
CPU the event loop leaves.
"""

from __future__ import annotations

import os
import threading

# Added to the thread's nice value: at +10 a thread weighs about a tenth of one at the process's own priority.
BACKGROUND_NICE = 10
_MAX_NICE = 19

_lowered = threading.local()


def run_below_event_loop() -> bool:
    """Lower the calling thread's CPU priority by BACKGROUND_NICE (once per thread); True if it is lowered now.

    Threads live on after the call: a pooled worker thread stays lowered for whatever it runs next, which is the
    point (the event loop is never one of them). Where the system has no per-thread priority, nothing changes.
    """
    if threading.current_thread() is threading.main_thread() or not hasattr(os, "setpriority"):
        return False  # the main thread runs the event loop (or a command's own work): never lowered
    if not hasattr(_lowered, "ok"):
        _lowered.ok = False
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(_MAX_NICE, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE))
            _lowered.ok = True
        except OSError:
            pass
    return _lowered.ok


def thread_nice() -> int | None:
    """The calling thread's nice value (None where the system has none per thread)."""
    if not hasattr(os, "getpriority"):
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
