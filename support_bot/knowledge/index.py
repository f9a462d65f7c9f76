"""Versioned index store: FAISS (exact inner product) + BM25 + metadata under index_dir/v{N}, with a CURRENT pointer."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from support_bot.config import Settings
from support_bot.errors import ConfigurationError

log = logging.getLogger(__name__)

FORMAT = 1
CURRENT = "CURRENT"
META = "meta.json"
DENSE = "dense.faiss"
LEXICAL = "lexical"
# Older versions stay for readers that are mid-swap and for a quick manual rollback.
KEEP_VERSIONS = 3
_STALE_TMP_S = 3600

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
# Words that carry no topic in support questions; kept short so negations and question words still count.
_STOPWORDS = frozenset(
    """a an and are as at be been but by can could do does did for from had has have how i if in into is it its
    me my of on or our so such than that the their them then there these they this to us was we were what when
    where which who will with would you your yours i'm it's i've you're""".split()
)


def _stem(word: str) -> str:
    """A light English suffix stripper: enough to match plurals and common verb forms across questions."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, repl, min_len in (
        ("ies", "y", 5),
        ("sses", "ss", 5),
        ("ing", "", 6),
        ("ed", "", 5),
        ("es", "", 5),
        ("s", "", 4),
    ):
        if word.endswith(suffix) and len(word) >= min_len:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            if suffix == "es" and not word.endswith(("ches", "shes", "xes", "zes", "sses")):
                continue
            stem = word[: len(word) - len(suffix)] + repl
            # "running" -> "runn" -> "run": collapse a doubled final consonant left by -ing/-ed.
            if suffix in ("ing", "ed") and len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in "aeioulsz":
                stem = stem[:-1]
            return stem
    return word


def lexical_tokens(text: str) -> list[str]:
    """Lower-cased, stop-word-free, lightly stemmed words; the same function indexes and queries."""
    words = (w.replace("’", "'") for w in _WORD.findall(text.lower()))
    return [_stem(w) for w in words if w not in _STOPWORDS]


@dataclass
class ChunkRecord:
    """Everything the retriever shows or filters on for one chunk, so a search never touches the database."""

    chunk_id: str
    source: str
    entry_id: str | None
    title: str | None
    text: str
    answer: str | None
    url: str | None
    lexical_text: str


@dataclass
class IndexVersion:
    """One immutable, fully loaded index version (version 0 = empty knowledge base)."""

    version: int
    records: list[ChunkRecord] = field(default_factory=list)
    dense: Any = None
    vec_start: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    lexical: Any = None
    embedding_model: str | None = None
    dim: int = 0
    sources: dict[str, dict] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def n_vectors(self) -> int:
        return int(self.vec_start[-1])

    def dense_search(self, query: np.ndarray, n_rows: int) -> dict[int, float]:
        """Best cosine per chunk row for about n_rows rows, best first."""
        if self.dense is None or not self.records or n_rows <= 0:
            return {}
        self._check_dim(query)
        per_row = max(1, self.n_vectors // len(self.records))
        k = min(self.n_vectors, n_rows * per_row + per_row)
        scores, ids = self.dense.search(query.reshape(1, -1).astype(np.float32), k)
        best: dict[int, float] = {}
        for score, row in zip(scores[0].tolist(), ids[0].tolist()):
            if row >= 0 and row not in best:
                best[row] = float(score)
        return best

    def dense_scores(self, query: np.ndarray, rows: Sequence[int]) -> dict[int, float]:
        """Exact best cosine for the given chunk rows (for candidates the dense top list missed)."""
        if self.dense is None or not rows:
            return {}
        self._check_dim(query)
        import faiss

        flat = faiss.downcast_index(self.dense.index)
        positions = np.concatenate([np.arange(self.vec_start[r], self.vec_start[r + 1]) for r in rows])
        vectors = flat.reconstruct_batch(positions.astype(np.int64))
        sims = vectors @ query.reshape(-1).astype(np.float32)
        out: dict[int, float] = {}
        offset = 0
        for r in rows:
            count = int(self.vec_start[r + 1] - self.vec_start[r])
            out[r] = float(sims[offset : offset + count].max()) if count else -1.0
            offset += count
        return out

    def lexical_scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk row for the query (zeros when no query word is known)."""
        if self.lexical is None or not self.records:
            return np.zeros(len(self.records), dtype=np.float32)
        ids = self.lexical.get_tokens_ids(lexical_tokens(query))
        if not ids:
            return np.zeros(len(self.records), dtype=np.float32)
        return np.asarray(self.lexical.get_scores(ids), dtype=np.float32)

    def _check_dim(self, query: np.ndarray) -> None:
        if query.size != self.dim:
            raise ConfigurationError(
                f"The index was built with embedding model {self.embedding_model!r} ({self.dim} dimensions) but the "
                f"configured model gives {query.size}; re-ingest the knowledge sources with the configured model"
            )


EMPTY = IndexVersion(version=0)


def _version_dirs(index_dir: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    if index_dir.is_dir():
        for child in index_dir.iterdir():
            if child.is_dir() and child.name.startswith("v") and child.name[1:].isdigit():
                out[int(child.name[1:])] = child
    return out


def read_current_version(index_dir: Path) -> int:
    """The version number CURRENT points at; 0 when nothing was published."""
    try:
        text = (index_dir / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return 0
    if not (text.startswith("v") and text[1:].isdigit()):
        raise ConfigurationError(f"{index_dir / CURRENT} is corrupt (content {text[:40]!r}); publish the index again")
    return int(text[1:])


@contextmanager
def _publish_lock(index_dir: Path) -> Iterator[None]:
    # Serializes publishers (worker threads, Celery workers on one host) so versions go live in the order built.
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".publish.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_version(
    index_dir: Path,
    *,
    records: Sequence[ChunkRecord],
    vectors: np.ndarray,
    vec_counts: Sequence[int],
    embedding_model: str | None,
    sources: dict[str, dict] | None = None,
) -> int:
    """Build a version in a temp dir, rename it in, then atomically point CURRENT at it; returns its number."""
    import bm25s
    import faiss

    if len(vec_counts) != len(records) or int(sum(vec_counts)) != len(vectors):
        raise ValueError("vec_counts must give each record's number of vectors")
    with _publish_lock(index_dir):
        tmp = index_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            dim = int(vectors.shape[1]) if len(vectors) else 0
            if len(records):
                rows = np.repeat(np.arange(len(records), dtype=np.int64), np.asarray(vec_counts, dtype=np.int64))
                dense = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
                dense.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), rows)
                faiss.write_index(dense, str(tmp / DENSE))
                lexical = bm25s.BM25()
                lexical.index([lexical_tokens(r.lexical_text) for r in records], show_progress=False)
                lexical.save(str(tmp / LEXICAL), show_progress=False)
            existing = _version_dirs(index_dir)
            number = max([read_current_version(index_dir), *existing.keys(), 0]) + 1
            meta = {
                "format": FORMAT,
                "version": number,
                "created_at": datetime.now(timezone.utc).isoformat(),
                "embedding_model": embedding_model,
                "dim": dim,
                "n_chunks": len(records),
                "n_vectors": int(len(vectors)),
                "sources": sources or {},
                "vec_start": np.concatenate([[0], np.cumsum(vec_counts, dtype=np.int64)]).tolist(),
                "chunks": [
                    [r.chunk_id, r.source, r.entry_id, r.title, r.text, r.answer, r.url, r.lexical_text]
                    for r in records
                ],
            }
            with open(tmp / META, "w", encoding="utf-8") as fh:
                json.dump(meta, fh, ensure_ascii=False)
                fh.flush()
                os.fsync(fh.fileno())
            final = index_dir / f"v{number}"
            os.rename(tmp, final)
            pointer = index_dir / f".CURRENT-{uuid.uuid4().hex}"
            with open(pointer, "w", encoding="utf-8") as fh:
                fh.write(f"v{number}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(pointer, index_dir / CURRENT)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _prune(index_dir, keep_from=number - KEEP_VERSIONS + 1)
    log.info("published index v%d: %d chunks, %d vectors", number, len(records), len(vectors))
    return number


def _prune(index_dir: Path, *, keep_from: int) -> None:
    for number, path in _version_dirs(index_dir).items():
        if number < keep_from:
            shutil.rmtree(path, ignore_errors=True)
    now = time.time()
    for child in index_dir.glob(".tmp-*"):
        if now - child.stat().st_mtime > _STALE_TMP_S:
            shutil.rmtree(child, ignore_errors=True)


def publish_index(*, session: Session, settings: Settings) -> int:
    """Build and publish a new index version from the chunks of every source's active version."""
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
    return write_version(
        settings.index_dir, records=records, vectors=vectors, vec_counts=counts, embedding_model=model, sources=sources
    )


def load_version(path: Path) -> IndexVersion:
    """Load one published version directory fully into memory."""
    import bm25s
    import faiss

    with open(path / META, encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("format") != FORMAT:
        raise ConfigurationError(f"index {path} has format {meta.get('format')}, expected {FORMAT}; publish it again")
    records = [ChunkRecord(*row) for row in meta["chunks"]]
    dense = lexical = None
    if records:
        dense = faiss.read_index(str(path / DENSE))
        lexical = bm25s.BM25.load(str(path / LEXICAL), show_progress=False)
    return IndexVersion(
        version=int(meta["version"]),
        records=records,
        dense=dense,
        vec_start=np.asarray(meta["vec_start"], dtype=np.int64),
        lexical=lexical,
        embedding_model=meta.get("embedding_model"),
        dim=int(meta.get("dim", 0)),
        sources=meta.get("sources", {}),
    )


def load_current(settings: Settings) -> IndexVersion:
    """The version CURRENT points at, loaded once (EMPTY when nothing was published)."""
    number = read_current_version(settings.index_dir)
    return load_version(settings.index_dir / f"v{number}") if number else EMPTY


class IndexReader:
    """Hands out the live version and swaps to a newly published one without a restart."""

    _RETRY_S = 5.0

    def __init__(self, index_dir: Path):
        self.index_dir = Path(index_dir)
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
        with self._lock:
            seen = self._stat()
            if seen == self._seen or time.monotonic() < self._retry_at:
                return self._version
            try:
                number = read_current_version(self.index_dir)
                if number != self._version.version:
                    self._version = load_version(self.index_dir / f"v{number}") if number else EMPTY
                    log.info("index v%d is live (%d chunks)", self._version.version, len(self._version))
                self._seen = seen
            except Exception:
                # Keep answering from the version already loaded; a broken publish must not take search down.
                log.exception("could not load index from %s; still serving v%d", self.index_dir, self._version.version)
                self._retry_at = time.monotonic() + self._RETRY_S
            return self._version


def install_version(index_dir: Path, source: Path) -> int:
    """Copy a complete version directory (e.g. from a backup) in as the next version and make it current."""
    with _publish_lock(index_dir):
        tmp = index_dir / f".tmp-{uuid.uuid4().hex}"
        try:
            shutil.copytree(source, tmp)
            number = max([read_current_version(index_dir), *_version_dirs(index_dir).keys(), 0]) + 1
            meta_path = tmp / META
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            meta["version"] = number
            meta_path.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
            os.rename(tmp, index_dir / f"v{number}")
            pointer = index_dir / f".CURRENT-{uuid.uuid4().hex}"
            pointer.write_text(f"v{number}\n", encoding="utf-8")
            os.replace(pointer, index_dir / CURRENT)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _prune(index_dir, keep_from=number - KEEP_VERSIONS + 1)
    return number
