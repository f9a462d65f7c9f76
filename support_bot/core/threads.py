"""Threads that leave the CPU to what must not wait: the event loop, and the model's own CPU threads.

A served app answers every request on one event-loop thread; the customer turns' own work (retrieval, guards,
grounding, reading the model's stream) runs on worker threads. Under a crowd of answers those threads keep both cores
busy, and the event loop then waits in the kernel's run queue behind them each time it wakes: health checks and every
other request wait with it. A worker thread lowers its own scheduling priority (its nice value, which Linux keeps per
thread) once, so that the kernel runs the event loop as soon as it has something to do (run_below_event_loop).

On a CPU, torch keeps an OpenMP thread team per thread that calls it; a long-lived team beside the model's slows
every decoding step (torch_on_one_thread). Short torch work off the main thread therefore runs on its own thread,
and batch work runs on a thread that ends with it (run_as_batch_job).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

# Added to the thread's nice value: at +10 a thread weighs about a tenth of one at the process's own priority.
BACKGROUND_NICE = 10
_MAX_NICE = 19

_lowered = threading.local()
_batch = threading.local()
T = TypeVar("T")


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


_one_torch_thread = threading.local()


@functools.cache
def _torch_openmp() -> Any:
    """torch's own OpenMP runtime (the library its kernels run their thread teams on), or None where there is none
    to find: other builds keep their defaults."""
    import ctypes

    try:
        import torch
    except ImportError:
        return None
    for name in ("libgomp.so.1", "libiomp5.so", "libomp.so", "libomp.dylib"):
        path = os.path.join(torch.__path__[0], "lib", name)
        if os.path.exists(path):
            try:
                runtime = ctypes.CDLL(path)
                runtime.omp_set_num_threads.argtypes = [ctypes.c_int]
                return runtime
            except (OSError, AttributeError):
                return None
    return None


def _set_torch_threads(n: int) -> int | None:
    """Set the calling thread's torch (OpenMP) thread count to n; the count it had, or None where it cannot."""
    runtime = _torch_openmp()
    if runtime is None:
        return None
    import torch

    before = torch.get_num_threads()  # torch sets a thread's count on its first use: let that happen, then override
    runtime.omp_set_num_threads(n)
    return before


def torch_on_one_thread() -> bool:
    """Run the calling thread's torch work (a query's embedding, a guard's check) on this thread alone; True if so.

    OpenMP keeps one team of threads per thread that calls into torch. Once a second team exists beside the model's
    (the turns' threads embedding queries), there are more threads than cores and the runtime stops spinning between
    the many small parallel sections of a decoding step: on 2 cores the model then wrote 64 tokens in 4.4-4.7 s
    instead of 2.8-2.9 s, for as long as the process lived. One short text gains almost nothing from a second thread.
    Only this thread's setting changes (torch.set_num_threads would also change what threads started later get,
    the model's own included).
    """
    if not hasattr(_one_torch_thread, "ok"):
        _one_torch_thread.ok = _set_torch_threads(1) is not None
    return _one_torch_thread.ok


@contextlib.contextmanager
def torch_on_one_thread_while() -> Iterator[bool]:
    """torch_on_one_thread for the duration of a block, the thread's own count given back afterwards (a command's
    main thread that runs a customer turn, then goes on with other work)."""
    if getattr(_one_torch_thread, "ok", False):
        yield True
        return
    before = _set_torch_threads(1)
    try:
        yield before is not None
    finally:
        if before is not None:
            _set_torch_threads(before)


def run_as_batch_job(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) on a thread of its own that may use every core for torch and ends with the call.

    A long-lived thread that once ran torch on several threads keeps its OpenMP team for good (see
    torch_on_one_thread); a batch job (embedding an upload) gets its speed, and the team is gone when the job is.
    Exceptions reach the caller.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        _batch.job = True
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"batch-{getattr(fn, '__name__', 'job')}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def torch_threads_for_small_work() -> None:
    """Called before a short piece of torch work (one query, a few texts) on whatever thread asks: off the main
    thread and outside batch jobs, such work runs on its thread alone (torch_on_one_thread). A command's main thread
    and a batch job keep every core."""
    if threading.current_thread() is threading.main_thread() or getattr(_batch, "job", False):
        return
    torch_on_one_thread()
