"""The per-process engine registry: picks a backend by settings (imported only then) and caches one engine per model."""

from __future__ import annotations

import threading

from support_bot.core.config import Settings
from support_bot.core.errors import ConfigurationError
from support_bot.llm.base import Engine

_engines: dict[tuple[str, ...], Engine] = {}
_engines_lock = threading.Lock()


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
    close = getattr(engine, "close", None)
    if callable(close):
        timer = threading.Timer(after_s, close)
        timer.daemon = True
        timer.start()


def reset_engines() -> None:
    """Forget every cached engine (tests, or after changing models)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        close = getattr(engine, "close", None)
        if callable(close):
            close()
