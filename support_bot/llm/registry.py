"""The per-process engine registry: picks a backend by settings (imported only then) and caches one engine per model."""

from __future__ import annotations

import atexit
import threading

from support_bot.core.config import Settings
from support_bot.core.errors import ConfigurationError
from support_bot.llm.base import Engine

_engines: dict[tuple[str, ...], Engine] = {}
_engines_lock = threading.Lock()


class _Retired:
    """An engine replaced by another model, waiting out its last answers before it is closed (once)."""

    def __init__(self, engine: Engine, after_s: float) -> None:
        self.engine = engine
        self.closed = False
        # Held while closing: whoever comes second waits until the memory is actually given back.
        self.lock = threading.Lock()
        self.timer = threading.Timer(after_s, _close_retired, args=(self,))
        self.timer.daemon = True


_retiring: list[_Retired] = []
_retiring_lock = threading.Lock()


def _cache_key(settings: Settings) -> tuple[str, ...]:
    llm = settings.llm
    if llm.backend == "openai":
        return (llm.backend, llm.openai_base_url, llm.openai_model, llm.model)
    return (llm.backend, llm.model, llm.device, str(settings.model_cache_dir))


def get_engine(settings: Settings) -> Engine:
    """The engine for these settings, created on first use and shared afterwards (models load once per process)."""
    key = _cache_key(settings)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _create_engine(settings)
            _engines[key] = engine
        return engine


def _create_engine(settings: Settings) -> Engine:
    # Imports stay inside the branches so that picking the fake or OpenAI backend never loads torch.
    match settings.llm.backend:
        case "transformers":
            from support_bot.llm.backends.hf.engine import TransformersEngine

            # A new engine sizes its KV cache from the GPU memory free when it starts: a replaced model still on
            # the GPU would leave it too little (or none), so it goes first, once its running answers are over.
            _close_retiring(on_gpu_only=True)
            return TransformersEngine(settings)
        case "openai":
            from support_bot.llm.backends.openai import OpenAIEngine

            return OpenAIEngine(settings)
        case "fake":
            from support_bot.llm.backends.fake import FakeEngine

            return FakeEngine(name=f"fake:{settings.llm.model}")
        case other:
            raise ConfigurationError(f"Unknown LLM backend {other!r}; use transformers, openai or fake")


def retire_engine(settings: Settings, *, after_s: float) -> None:
    """Forget the engine for these settings and close it after `after_s`, once answers it may be giving are over.

    For a model replaced on the console's settings page: without this every model ever chosen would stay loaded
    (on a GPU, in its memory) until the process ends.
    """
    with _engines_lock:
        engine = _engines.pop(_cache_key(settings), None)
    if engine is None or not callable(getattr(engine, "close", None)):
        return
    retired = _Retired(engine, after_s)
    with _retiring_lock:
        _retiring.append(retired)
    retired.timer.start()


def _close_retired(retired: _Retired) -> None:
    """Close a retired engine once (by its timer, or earlier when its GPU memory is needed)."""
    with retired.lock:
        if not retired.closed:
            retired.engine.close()  # type: ignore[attr-defined]
            retired.closed = True
    with _retiring_lock:
        if retired in _retiring:
            _retiring.remove(retired)


def _close_retiring(*, on_gpu_only: bool) -> None:
    """Close retired engines now rather than at their timers; each waits for the answers it is giving first."""
    with _retiring_lock:
        due = [r for r in _retiring if not on_gpu_only or str(getattr(r.engine, "device", "")).startswith("cuda")]
    for retired in due:
        retired.timer.cancel()
        drain = getattr(retired.engine, "drain", None)
        if callable(drain):
            drain()
        _close_retired(retired)


def reset_engines() -> None:
    """Forget every cached engine (tests, or after changing models)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    with _retiring_lock:
        retired, _retiring[:] = list(_retiring), []
    for item in retired:
        item.timer.cancel()
        _close_retired(item)
    for engine in engines:
        close = getattr(engine, "close", None)
        if callable(close):
            close()


# Engines own threads that run native code (a scheduler stepping a model); left running while the interpreter shuts
# down, they aborted the process after its work was done (`support-bot eval answers` exited with status 134).
atexit.register(reset_engines)
