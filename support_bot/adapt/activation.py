"""Switching the live embedder: every stored chunk re-embedded with it, published as a new index version.

The switch is atomic for search: the state file records from which index version on the new model's vectors are
served, written under the publish lock before that version goes live, and each search picks the query embedder by
the version it searches. The order of the steps keeps uploads consistent too:
1. embed every chunk stored now with the new model (the long part; search and uploads go on meanwhile);
2. point new uploads at the new model, then wait for ingest jobs already running (they embed with the old one);
3. under the publish lock, embed whatever chunks were stored since step 1, write every chunk's new vectors in one
   transaction, record the switch and publish the index version that holds them.
An upload that goes live between steps 2 and 3 is searched with the old model until step 3 ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy import select, update

from support_bot.adapt import artifacts
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.core.errors import ConfigurationError
from support_bot.knowledge.embedder import EMBEDDER_KIND, get_embedder
from support_bot.knowledge.index import publish_lock, read_current_version
from support_bot.knowledge.publish import publish_index

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
_BATCH = 256
_POLL_S = 1.0


def chunk_views(title: str | None, text: str, n_vectors: int) -> list[str]:
    """The texts ingest embedded for a stored chunk: [question, answer part] (ingest.chunking), or the text alone."""
    if n_vectors == 1:
        return [text]
    if n_vectors == 2 and title is not None:
        return [title, text[len(title) + 1 :] if text.startswith(title + "\n") else text]
    raise ConfigurationError(f"a chunk stored with {n_vectors} vectors cannot be re-embedded; re-ingest its source")


def _embed(embedder, rows: list[tuple], progress: Progress | None, phase: str) -> dict[str, bytes]:
    """{chunk id: its views' vectors as stored float32 bytes} for rows of (id, title, text, extra)."""
    out: dict[str, bytes] = {}
    for start in range(0, len(rows), _BATCH):
        part = rows[start : start + _BATCH]
        views = [chunk_views(title, text, int((extra or {}).get("n_vectors", 1))) for _id, title, text, extra in part]
        # FAQs repeat answers (one answer under several questions): each distinct text is encoded once.
        distinct = list(dict.fromkeys(v for vs in views for v in vs))
        where = {t: i for i, t in enumerate(distinct)}
        vectors = embedder.encode(distinct)
        for (chunk_id, *_), vs in zip(part, views):
            out[chunk_id] = np.ascontiguousarray(vectors[[where[v] for v in vs]], dtype=np.float32).tobytes()
        if progress:
            progress(phase, min(start + _BATCH, len(rows)), len(rows))
    return out


def _stored_chunks(settings: Settings) -> list[tuple]:
    from support_bot.models import Chunk

    with session_scope(settings) as session:
        return [tuple(r) for r in session.execute(select(Chunk.id, Chunk.title, Chunk.text, Chunk.extra).order_by(Chunk.id))]


def _running_jobs(settings: Settings) -> set[str]:
    from support_bot.models import IngestJob

    with session_scope(settings) as session:
        return set(session.scalars(select(IngestJob.id).where(IngestJob.status == "running")))


def _wait_for(settings: Settings, job_ids: set[str], progress: Progress | None) -> None:
    """Until the given ingest jobs stop running (they embed with the previous model), at most their time limit."""
    deadline = time.monotonic() + settings.ingest.job_time_limit_s + 60
    total = len(job_ids)
    while job_ids and time.monotonic() < deadline:
        job_ids &= _running_jobs(settings)
        if progress:
            progress("waiting for running uploads", total - len(job_ids), total)
        if job_ids:
            time.sleep(_POLL_S)
    if job_ids:
        log.warning("ingest jobs %s still run after their time limit; switching the embedder anyway", sorted(job_ids))


def next_index_version(index_dir: Path) -> int:
    """The number the next publish gets (knowledge.index numbers past CURRENT and every version directory)."""
    numbers = [read_current_version(index_dir)]
    if index_dir.is_dir():
        numbers += [int(p.name[1:]) for p in index_dir.iterdir() if p.is_dir() and p.name[:1] == "v" and p.name[1:].isdigit()]
    return max(numbers) + 1


def switch(settings: Settings, target: str | None, *, history: list, progress: Progress | None = None) -> dict:
    """Re-embed the knowledge base with `target` (None: the configured model) and publish it; `history` is recorded.

    -> {"index_version", "chunks", "artifact"}.
    """
    from support_bot.models import Chunk

    embedder = get_embedder(settings, target)
    snapshot = _stored_chunks(settings)
    vectors = _embed(embedder, snapshot, progress, "re-embedding the knowledge base")
    before = artifacts.read_state(settings)
    artifacts.change_state(settings, EMBEDDER_KIND, lambda s: {**s, "ingest": target})
    committed = False
    try:
        _wait_for(settings, _running_jobs(settings), progress)
        # Held to the end: no other version can go live between this commit and the publish of what it stored.
        with publish_lock(settings.index_dir):
            with session_scope(settings) as session:
                rows = [tuple(r) for r in session.execute(select(Chunk.id, Chunk.title, Chunk.text, Chunk.extra))]
                vectors.update(_embed(embedder, [r for r in rows if r[0] not in vectors], None, "new chunks"))
                if rows:
                    session.execute(update(Chunk), [{"id": r[0], "embedding": vectors[r[0]]} for r in rows])
                number = next_index_version(settings.index_dir)
                artifacts.change_state(
                    settings, EMBEDDER_KIND,
                    lambda s: {**s, "serving": [*(s.get("serving") or []), [number, target]], "history": history},
                )
            committed = True
            if progress:
                progress("publishing the index", 0, 1)
            with session_scope(settings) as session:
                published = publish_index(session=session, settings=settings)
    except BaseException as exc:
        if not committed:
            # Nothing was stored: the previous model stays in use everywhere.
            artifacts.change_state(
                settings, EMBEDDER_KIND, lambda s: {**before, "serving": before.get("serving") or []}
            )
            raise
        raise ConfigurationError(
            f"the knowledge base was re-embedded but publishing the index failed ({exc}); the previous index still "
            "serves: run `support-bot kb reindex`"
        ) from exc
    if published != number:
        # Only a later number is possible, and versions from `number` on are searched with the new model anyway.
        log.warning("index v%d was published where v%d was expected", published, number)
    log.info("embedder %s is live from index v%d (%d chunks)", target or settings.embedding.model, published, len(rows))
    return {"index_version": published, "chunks": len(rows), "artifact": target}
