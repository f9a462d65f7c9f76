"""Publishing: a new index version built from the chunks of every source's active version in the database."""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from support_bot.core.config import Settings
from support_bot.core.errors import ConfigurationError
from support_bot.knowledge.calibration import stored
from support_bot.knowledge.index import (
    ChunkRecord,
    follow_with_approximate,
    publish_lock,
    write_version,
)

log = logging.getLogger(__name__)


def publish_index(*, session: Session, settings: Settings) -> int:
    """Build and publish a new index version from the chunks of every source's active version.

    The database is read under the publish lock: a publisher that read before another's newer change went live
    would otherwise write its older snapshot last, and the live index would lack that change until the next one.
    """
    with publish_lock(settings.index_dir):
        number, n_vectors = _build_and_write(session, settings)
    # An approximate index takes minutes to build: other publishers need not wait for it.
    follow_with_approximate(settings.index_dir, number, n_vectors, settings.index)
    return number


def _build_and_write(session: Session, settings: Settings) -> tuple[int, int]:
    from support_bot.models import Chunk, Document, Source

    stmt = (
        select(Chunk, Source.name, Document.id, Document.version)
        .join(Document, Chunk.document_id == Document.id)
        .join(Source, Chunk.source_id == Source.id)
        .where(Document.version == Source.active_version)
        .order_by(Source.name, Chunk.ordinal)
    )
    records: list[ChunkRecord] = []
    parts: list[np.ndarray] = []
    counts: list[int] = []
    sources: dict[str, dict] = {}
    models: set[str] = set()
    dims: set[int] = set()
    for chunk, source_name, document_id, version in session.execute(stmt):
        extra = chunk.extra or {}
        n_vec = int(extra.get("n_vectors", 1))
        vec = np.frombuffer(chunk.embedding or b"", dtype=np.float32)
        if n_vec <= 0 or vec.size == 0 or vec.size % n_vec:
            raise ConfigurationError(
                f"chunk {chunk.id} of source {source_name!r} has no usable embedding; re-ingest it"
            )
        dims.add(vec.size // n_vec)
        if extra.get("embedding_model"):
            models.add(extra["embedding_model"])
        parts.append(vec.reshape(n_vec, -1))
        counts.append(n_vec)
        records.append(
            ChunkRecord(
                chunk_id=chunk.id,
                source=source_name,
                entry_id=chunk.entry_id,
                title=chunk.title,
                text=chunk.text,
                answer=extra.get("answer"),
                url=chunk.url,
                lexical_text=extra.get("lexical_text") or chunk.text,
            )
        )
        sources[source_name] = {"document_id": document_id, "version": version}
    if len(dims) > 1:
        raise ConfigurationError(
            f"knowledge sources were embedded with different models ({', '.join(sorted(models)) or 'unknown'}); "
            "re-ingest them with the configured model"
        )
    vectors = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
    model = models.pop() if len(models) == 1 else settings.embedding.model
    number = write_version(
        settings.index_dir,
        records=records,
        vectors=vectors,
        vec_counts=counts,
        embedding_model=model,
        sources=sources,
        calibrate=lambda version: stored(version, settings.retrieval, trained=_trained(settings, version.version)),
    )
    return number, len(vectors)


def _trained(settings: Settings, number: int) -> frozenset[str]:
    """The questions the embedder serving index version `number` was tuned on (none for the configured model)."""
    from support_bot.knowledge.embedder import read_embedder_state, serving_artifact, trained_questions

    return trained_questions(settings, serving_artifact(read_embedder_state(settings), number))
