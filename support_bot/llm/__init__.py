"""Chat models: presets and pulling, prompt formats, and the generation engines."""

from support_bot.llm.base import Engine
from support_bot.llm.registry import get_engine, reset_engines
from support_bot.llm.presets import DEFAULT_MODEL, PRESETS, ModelPreset
from support_bot.llm.prompt import ChatMessage, format_llama2, llama2_token_ids, render_prompt_ids
from support_bot.llm.pull import ResolvedModel, list_models, pull_model, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "PRESETS",
    "ChatMessage",
    "Engine",
    "ModelPreset",
    "ResolvedModel",
    "format_llama2",
    "get_engine",
    "list_models",
    "llama2_token_ids",
    "pull_model",
    "render_prompt_ids",
    "reset_engines",
    "resolve_model",
]
