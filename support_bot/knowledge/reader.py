"""Reading the index: load a published version, and a reader that swaps to a newly published one without a restart."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from support_bot.core.config import IndexSettings, Settings
from support_bot.core.errors import ConfigurationError

from support_bot.knowledge.index import (
    CALIBRATION, CHUNKS, CURRENT, DENSE, EMPTY, EXACT, LEXICAL, META, _READABLE_FORMATS, ChunkRecord, IndexVersion,
    read_current_version,
)

log = logging.getLogger(__name__)


def _search_params(dense: Any, kind: str, cfg: IndexSettings | None) -> None:
    """Apply search-time settings to a loaded approximate index (without them, the values saved at build hold)."""
    import faiss

    inner = faiss.downcast_index(dense.index)
    if kind == "ivf":
        # Lets row_vectors reconstruct stored vectors by position, as it does for the exact and HNSW kinds.
        inner.make_direct_map()
        if cfg is not None:
            inner.nprobe = min(cfg.ivf_nprobe, inner.nlist)
    elif kind == "hnsw" and cfg is not None:
        inner.hnsw.efSearch = cfg.hnsw_ef_search


def load_version(
    path: Path, *, settings: IndexSettings | None = None, previous: IndexVersion | None = None
) -> IndexVersion:
    """Load one published version directory fully into memory.

    When `previous` holds the same content (the exact version an approximate one was built from), its chunk
    records and lexical index are reused and only the dense index is read.
    """
    import bm25s
    import faiss

    with open(path / META, encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("format") not in _READABLE_FORMATS:
        raise ConfigurationError(
            f"index {path} has format {meta.get('format')}, expected one of {_READABLE_FORMATS}; publish it again"
        )
    dense_info = dict(meta.get("dense") or {"kind": EXACT})
    kind = dense_info.pop("kind", EXACT)
    content_id = meta.get("content_id")
    reuse = previous is not None and content_id is not None and previous.content_id == content_id
    if reuse:
        records, vec_start, lexical = previous.records, previous.vec_start, previous.lexical
    else:
        if "chunks" in meta:
            chunks = meta
        else:
            with open(path / CHUNKS, encoding="utf-8") as fh:
                chunks = json.load(fh)
        records = [ChunkRecord(*row) for row in chunks["chunks"]]
        vec_start = np.asarray(chunks["vec_start"], dtype=np.int64)
        lexical = bm25s.BM25.load(str(path / LEXICAL), show_progress=False) if records else None
    calibration = None
    if (path / CALIBRATION).is_file():
        try:
            with open(path / CALIBRATION, encoding="utf-8") as fh:
                calibration = json.load(fh)
            if not isinstance(calibration, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            # The version itself is whole; only its choice of weights is lost: search with the configured ones.
            log.warning("index %s: unreadable %s (%s); the configured retrieval settings apply", path, CALIBRATION, exc)
            calibration = None
    dense = None
    if records:
        dense = faiss.read_index(str(path / DENSE))
        if dense.ntotal != int(vec_start[-1]):
            raise ConfigurationError(
                f"index {path} holds {dense.ntotal} vectors but its chunks name {int(vec_start[-1])}; publish it again"
            )
        if kind != EXACT:
            _search_params(dense, kind, settings)
    return IndexVersion(
        version=int(meta["version"]),
        records=records,
        dense=dense,
        vec_start=vec_start,
        lexical=lexical,
        embedding_model=meta.get("embedding_model"),
        dim=int(meta.get("dim", 0)),
        sources=meta.get("sources", {}),
        dense_kind=kind,
        dense_params=dense_info,
        content_id=content_id,
        calibration=calibration,
    )


def load_current(settings: Settings) -> IndexVersion:
    """The version CURRENT points at, loaded once (EMPTY when nothing was published)."""
    number = read_current_version(settings.index_dir)
    return load_version(settings.index_dir / f"v{number}", settings=settings.index) if number else EMPTY


class IndexReader:
    """Hands out the live version and swaps to a newly published one without a restart.

    `settings` gives the search-time parameters of approximate indexes (HNSW efSearch, IVF nprobe); without it,
    the values saved when the index was built apply.
    """

    _RETRY_S = 5.0

    def __init__(self, index_dir: Path, *, settings: IndexSettings | None = None):
        self.index_dir = Path(index_dir)
        self.settings = settings
        self._version: IndexVersion = EMPTY
        self._seen: tuple[int, int, int] | None = None
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.index_dir / CURRENT)
        except FileNotFoundError:
            return None
        # os.replace gives CURRENT a new inode, so this changes on every publish even within one mtime tick.
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> IndexVersion:
        """The live version; a stat per call, a reload only when CURRENT changed."""
        seen = self._stat()
        if seen == self._seen:
            return self._version
        # While one caller loads a new version (seconds for a million chunks), the others keep answering from the
        # loaded one instead of queueing behind it; only before the first load is there nothing to answer from.
        if not self._lock.acquire(blocking=self._version is EMPTY):
            return self._version
        try:
            seen = self._stat()
            if seen == self._seen or time.monotonic() < self._retry_at:
                return self._version
            try:
                number = read_current_version(self.index_dir)
                if number != self._version.version:
                    self._version = (
                        load_version(self.index_dir / f"v{number}", settings=self.settings, previous=self._version)
                        if number
                        else EMPTY
                    )
                    log.info(
                        "index v%d is live (%d chunks, %s search)",
                        self._version.version,
                        len(self._version),
                        self._version.dense_kind,
                    )
                self._seen = seen
            except Exception:
                # Keep answering from the version already loaded; a broken publish must not take search down.
                log.exception("could not load index from %s; still serving v%d", self.index_dir, self._version.version)
                self._retry_at = time.monotonic() + self._RETRY_S
            return self._version
        finally:
            self._lock.release()
