"""Which tuned chat adapter (a LoRA of the configured model) is live: read by the engine before each request.

The adapters and their state file live where support_bot.adapt.artifacts keeps every kind of tuned artifact,
<data_dir>/adapters/chat/: chat-NNNN/ (artifact.json + model/, the LoRA weights as peft saves them) and state.json,
whose "history" lists the artifacts activated in order, the live one last. Activation and rollback replace the
state file atomically; the engine stats it on every request and re-loads its weights when the live adapter changed,
so a switch needs no restart. This module sits below the adaptation package so that the engine can read it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from support_bot.core.config import Settings
from support_bot.core.statefile import read_state

log = logging.getLogger(__name__)

# The same names support_bot.knowledge.embedder uses for the embedder's artifacts (artifacts.py checks they agree).
ADAPTERS_DIR = "adapters"
STATE_FILE = "state.json"
ARTIFACT_FILE = "artifact.json"
MODEL_DIR = "model"
CHAT_KIND = "chat"



def chat_adapters_dir(settings: Settings) -> Path:
    """Where tuned chat adapters and the state file naming the live one are kept."""
    return (settings.data_dir / ADAPTERS_DIR / CHAT_KIND).resolve()


def read_chat_state(settings: Settings) -> dict:
    """The chat adapters' state file ({"history": [...]}); a stat per call, a read only when it changed."""
    return read_state(chat_adapters_dir(settings) / STATE_FILE)


def live_chat_adapter(settings: Settings) -> str | None:
    """The adapter live now (None: the configured model as shipped)."""
    history = read_chat_state(settings).get("history") or []
    return history[-1] if history else None


def adapter_weights_dir(settings: Settings, artifact: str) -> Path | None:
    """The LoRA weights of `artifact` when they are a tuning of the configured model; None (logged) otherwise.

    An adapter that cannot be served (its files gone, or tuned for another model than the one configured now) is
    not a reason to stop answering customers: the caller serves the configured model and the log says why.
    """
    root = chat_adapters_dir(settings) / artifact
    try:
        record = json.loads((root / ARTIFACT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.error("the live chat adapter %s has no readable record under %s; serving %s as shipped (run "
                  "`support-bot adapters rollback --kind chat`)", artifact, root, settings.llm.model)
        return None
    if record.get("base_model") != settings.llm.model:
        log.error("the live chat adapter %s is a tuning of %r, not of the configured %r; serving the configured model "
                  "as shipped", artifact, record.get("base_model"), settings.llm.model)
        return None
    weights = root / MODEL_DIR
    if not weights.is_dir():
        log.error("the live chat adapter %s has no weights under %s; serving %s as shipped", artifact, weights,
                  settings.llm.model)
        return None
    return weights
