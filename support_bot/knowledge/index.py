"""Versioned index store: FAISS + BM25 + chunk records under index_dir/v{N}, with a CURRENT pointer.

Dense search is exact (flat inner product) up to settings.index.approximate_above vectors. Above it the exact version
is published first and answers while an approximate index (HNSW or IVF) is built from it in a background process and
published as the next version, sharing the exact version's chunk and lexical files. Versions never change once
published, so a reader sees either a whole version or the previous one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from support_bot.core.config import IndexSettings
from support_bot.core.errors import ConfigurationError
from support_bot.knowledge.lexical import lexical_tokens

log = logging.getLogger(__name__)

# 2 moved the chunk records out of meta.json into chunks.json, so an approximate version can share them by hard link
# and a reader can check a version's header without parsing every chunk; format 1 versions still load.
FORMAT = 2
_READABLE_FORMATS = (1, 2)
CURRENT = "CURRENT"
META = "meta.json"
CHUNKS = "chunks.json"
DENSE = "dense.faiss"
LEXICAL = "lexical"
# The weights and thresholds chosen for this version's knowledge (knowledge.calibration); absent in older versions.
CALIBRATION = "calibration.json"
EXACT = "exact"
# Older versions stay for readers that are mid-swap and for a quick manual rollback.
KEEP_VERSIONS = 3
_STALE_TMP_S = 3600
# Vectors added to an approximate index between two checks that its version is still the live one.
_BUILD_BATCH = 50_000
# k-means needs about 40 points per cluster; more adds training time without better clusters.
_IVF_TRAIN_PER_LIST = 40


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
    # "exact", "hnsw" or "ivf", with the build parameters of an approximate index.
    dense_kind: str = EXACT
    dense_params: dict[str, Any] = field(default_factory=dict)
    # Shared by an exact version and the approximate version built from it (same chunks, same lexical index).
    content_id: str | None = None
    # What knowledge.calibration chose for this version (None: the configured settings hold).
    calibration: dict | None = None
    _bounds: np.ndarray | None = field(default=None, repr=False, compare=False)

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
        scores, ids = _search_one(self.dense, query.reshape(1, -1).astype(np.float32), k)
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
        q = query.reshape(-1).astype(np.float32)
        return {r: float((v @ q).max()) if len(v) else -1.0 for r, v in zip(rows, self.row_vectors(rows))}

    def row_vectors(self, rows: Sequence[int]) -> list[np.ndarray]:
        """The stored vectors of each given chunk row, in the order its views were embedded."""
        if self.dense is None or not len(rows):
            return [np.zeros((0, self.dim), dtype=np.float32) for _ in rows]
        import faiss

        # Exact, HNSW-flat and IVF-flat (given its direct map, set up at load) all keep the full vectors.
        stored = faiss.downcast_index(self.dense.index)
        starts, ends = self.vec_start[np.asarray(rows)], self.vec_start[np.asarray(rows) + 1]
        positions = np.concatenate([np.arange(a, b) for a, b in zip(starts.tolist(), ends.tolist())])
        vectors = stored.reconstruct_batch(positions.astype(np.int64))
        return np.split(vectors, np.cumsum(ends - starts)[:-1].tolist())

    def lexical_scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk row for the query (zeros when no query word is known)."""
        if self.lexical is None or not self.records:
            return np.zeros(len(self.records), dtype=np.float32)
        ids = self.lexical.get_tokens_ids(lexical_tokens(query))
        if not ids:
            return np.zeros(len(self.records), dtype=np.float32)
        return np.asarray(self.lexical.get_scores(ids), dtype=np.float32)

    def lexical_top(self, query: str, n: int, *, scores: np.ndarray | None = None) -> dict[int, float]:
        """The n rows with the highest positive BM25 score, best first (ties by row).

        Pass `scores` when lexical_scores(query) is at hand. Rows holding none of the query's rarer words are
        skipped once the commoner words alone could not lift them to the n-th best score, so the cost follows
        those words' postings instead of the number of rows.
        """
        if n <= 0:
            return {}
        if scores is None:
            scores = self.lexical_scores(query)
        hits = self._lexical_candidates(query, scores, n)
        hits = np.flatnonzero(scores > 0) if hits is None else np.unique(hits)
        if len(hits) > n:
            # Keep every row tied with the n-th best, so the cut below is by row number, not partition order.
            nth = -np.partition(-scores[hits], n - 1)[n - 1]
            hits = hits[scores[hits] >= nth]
        hits = hits[np.lexsort((hits, -scores[hits]))][:n]
        return {int(r): float(scores[r]) for r in hits}

    def _lexical_candidates(self, query: str, scores: np.ndarray, n: int) -> np.ndarray | None:
        """Rows (repeats allowed) that surely hold the lexical top n, or None when only a full scan is sure."""
        ids = self.lexical.get_tokens_ids(lexical_tokens(query)) if self.lexical is not None and self.records else []
        if not ids or getattr(self.lexical, "nonoccurrence_array", None) is not None:
            return None
        indices, indptr = self.lexical.scores["indices"], self.lexical.scores["indptr"]
        bounds = self._token_bounds()
        tokens, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
        order = np.argsort(indptr[tokens + 1] - indptr[tokens], kind="stable")
        tokens, counts = tokens[order], counts[order]
        # The most the words not yet taken can add to a row's score (a repeated query word counts each time).
        rest = float((bounds[tokens].astype(np.float64) * counts).sum())
        parts: list[np.ndarray] = []
        for j in range(len(tokens) - 1):
            token = int(tokens[j])
            rest -= float(bounds[token]) * int(counts[j])
            parts.append(indices[int(indptr[token]) : int(indptr[token + 1])])
            rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
            if len(rows) > len(scores) // 2:
                return None
            # Each row appears at most j + 1 times, so the (j + 1) * n-th best entry is at most the n-th best row.
            need = (j + 1) * n
            if len(rows) < need:
                continue
            values = scores[rows]
            floor = float(-np.partition(-values, need - 1)[need - 1])
            # Any other row scores at most `rest`; the margin covers float32 rounding in its summed score.
            if floor > rest * (1 + 1e-5) + 1e-6:
                return rows[values >= floor]
        return None

    def _token_bounds(self) -> np.ndarray:
        """Each word's highest BM25 contribution to any row (computed once per version)."""
        if self._bounds is None:
            data, indptr = self.lexical.scores["data"], self.lexical.scores["indptr"]
            bounds = np.zeros(len(indptr) - 1, dtype=np.float32)
            nonempty = indptr[1:] > indptr[:-1]
            if data.size:
                bounds[nonempty] = np.maximum.reduceat(data, indptr[:-1][nonempty])
            self._bounds = bounds
        return self._bounds

    def _check_dim(self, query: np.ndarray) -> None:
        if query.size != self.dim:
            raise ConfigurationError(
                f"The index was built with embedding model {self.embedding_model!r} ({self.dim} dimensions) but the "
                f"configured model gives {query.size}; re-ingest the knowledge sources with the configured model"
            )


EMPTY = IndexVersion(version=0)


def _search_one(dense: Any, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Search one query on the calling thread only (the OpenMP thread count is per calling thread)."""
    import faiss

    # One query gains nothing from a second OpenMP thread, and waking one costs more than the search itself when
    # the cores are busy: IVF at 100k vectors took 5-15 ms with two threads against 0.5 ms with one on a loaded
    # 2-core machine.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return dense.search(query, k)
    finally:
        faiss.omp_set_num_threads(threads)


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


_held_locks = threading.local()


@contextmanager
def publish_lock(index_dir: Path) -> Iterator[None]:
    """Serializes publishers (worker threads, Celery workers on one host) so versions go live in the order built.

    Reentrant on one thread, so a publisher can read what it publishes under the same hold as it writes it.
    """
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    key = str(index_dir.resolve())
    held = _held_locks.__dict__.setdefault("dirs", set())
    if key in held:
        yield
        return
    with open(index_dir / ".publish.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())


def _next_number(index_dir: Path) -> int:
    return max([read_current_version(index_dir), *_version_dirs(index_dir).keys(), 0]) + 1


def _go_live(index_dir: Path, tmp: Path, number: int) -> None:
    """Rename a fully written temp dir to v{number}, then point CURRENT at it; the caller holds the publish lock."""
    os.rename(tmp, index_dir / f"v{number}")
    pointer = index_dir / f".CURRENT-{uuid.uuid4().hex}"
    with open(pointer, "w", encoding="utf-8") as fh:
        fh.write(f"v{number}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(pointer, index_dir / CURRENT)


def _exact_index(vectors: np.ndarray, rows: np.ndarray) -> Any:
    import faiss

    dense = faiss.IndexIDMap(faiss.IndexFlatIP(int(vectors.shape[1])))
    dense.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), rows)
    return dense


def ivf_lists(n_vectors: int, cfg: IndexSettings) -> int:
    """IVF cluster count: the configured one, else 4 * sqrt(n); never more than the vectors can train."""
    wanted = cfg.ivf_nlist or int(4 * np.sqrt(max(n_vectors, 1)))
    return max(1, min(wanted, n_vectors // _IVF_TRAIN_PER_LIST))


def approximate_index(
    vectors: np.ndarray,
    rows: np.ndarray,
    cfg: IndexSettings,
    *,
    superseded: Callable[[], bool] = lambda: False,
) -> Any:
    """An HNSW or IVF inner-product index over vectors labelled with their chunk rows; None once superseded()."""
    import faiss

    n, dim = vectors.shape
    if cfg.approximate_kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = cfg.hnsw_ef_construction
        inner.hnsw.efSearch = cfg.hnsw_ef_search
    else:
        nlist = ivf_lists(n, cfg)
        quantizer = faiss.IndexFlatIP(dim)
        inner = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(n, size=min(n, nlist * _IVF_TRAIN_PER_LIST), replace=False))
        inner.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        inner.nprobe = min(cfg.ivf_nprobe, nlist)
    dense = faiss.IndexIDMap(inner)
    for start in range(0, n, _BUILD_BATCH):
        if superseded():
            return None
        stop = min(n, start + _BUILD_BATCH)
        dense.add_with_ids(np.ascontiguousarray(vectors[start:stop], dtype=np.float32), rows[start:stop])
    return dense


def _dense_params(cfg: IndexSettings, n_vectors: int) -> dict[str, Any]:
    if cfg.approximate_kind == "hnsw":
        return {"m": cfg.hnsw_m, "ef_construction": cfg.hnsw_ef_construction, "ef_search": cfg.hnsw_ef_search}
    nlist = ivf_lists(n_vectors, cfg)
    return {"nlist": nlist, "nprobe": min(cfg.ivf_nprobe, nlist)}


def write_version(
    index_dir: Path,
    *,
    records: Sequence[ChunkRecord],
    vectors: np.ndarray,
    vec_counts: Sequence[int],
    embedding_model: str | None,
    sources: dict[str, dict] | None = None,
    index: IndexSettings | None = None,
    calibrate: Callable[[IndexVersion], dict | None] | None = None,
) -> int:
    """Build an exact version in a temp dir, rename it in, atomically point CURRENT at it; returns its number.

    `calibrate`, when given, gets the complete version before it goes live; what it returns is stored with the
    version (CALIBRATION) and goes live with it. With index settings and more than index.approximate_above vectors,
    an approximate version follows (see build_approximate): started in the background, or built before returning.
    """
    import bm25s

    if len(vec_counts) != len(records) or int(sum(vec_counts)) != len(vectors):
        raise ValueError("vec_counts must give each record's number of vectors")
    with publish_lock(index_dir):
        tmp = index_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            dim = int(vectors.shape[1]) if len(vectors) else 0
            dense = lexical = None
            if len(records):
                import faiss

                rows = np.repeat(np.arange(len(records), dtype=np.int64), np.asarray(vec_counts, dtype=np.int64))
                dense = _exact_index(vectors, rows)
                faiss.write_index(dense, str(tmp / DENSE))
                lexical = bm25s.BM25()
                lexical.index([lexical_tokens(r.lexical_text) for r in records], show_progress=False)
                lexical.save(str(tmp / LEXICAL), show_progress=False)
            chunks = {
                "vec_start": np.concatenate([[0], np.cumsum(vec_counts, dtype=np.int64)]).tolist(),
                "chunks": [
                    [r.chunk_id, r.source, r.entry_id, r.title, r.text, r.answer, r.url, r.lexical_text]
                    for r in records
                ],
            }
            _write_json(tmp / CHUNKS, chunks)
            number = _next_number(index_dir)
            meta = {
                "format": FORMAT,
                "version": number,
                "created_at": datetime.now(timezone.utc).isoformat(),
                "embedding_model": embedding_model,
                "dim": dim,
                "n_chunks": len(records),
                "n_vectors": int(len(vectors)),
                "sources": sources or {},
                "content_id": uuid.uuid4().hex,
                "dense": {"kind": EXACT},
            }
            _write_json(tmp / META, meta)
            if calibrate is not None and records:
                built = IndexVersion(
                    version=number, records=list(records), dense=dense, vec_start=np.asarray(chunks["vec_start"]),
                    lexical=lexical, embedding_model=embedding_model, dim=dim, sources=meta["sources"],
                    content_id=meta["content_id"],
                )
                chosen = calibrate(built)
                if chosen is not None:
                    _write_json(tmp / CALIBRATION, chosen)
            _go_live(index_dir, tmp, number)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _prune(index_dir, keep_from=number - KEEP_VERSIONS + 1)
    log.info("published index v%d: %d chunks, %d vectors, exact search", number, len(records), len(vectors))
    if index is not None:
        follow_with_approximate(index_dir, number, len(vectors), index)
    return number


def follow_with_approximate(index_dir: Path, number: int, n_vectors: int, index: IndexSettings) -> None:
    """Above index.approximate_above vectors, build an approximate version after exact version `number` (in the
    background, or now); call it without holding the publish lock, which a build takes only to publish."""
    if n_vectors > index.approximate_above:
        if index.approximate_in_background:
            start_approximate_build(index_dir, number, index)
        else:
            build_approximate(index_dir, number, index)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        # Some shared file systems refuse hard links; a copy is slower but the same content.
        shutil.copy2(src, dst)


def build_approximate(index_dir: Path, number: int, cfg: IndexSettings) -> int | None:
    """Build an approximate dense index for exact version `number` and publish it as the next version.

    Returns the new version's number, or None when `number` is no longer the live version (a newer publish
    supersedes it and starts its own build) or is not an exact version.
    """
    import faiss

    index_dir = Path(index_dir)
    source = index_dir / f"v{number}"

    def superseded() -> bool:
        return read_current_version(index_dir) != number

    if superseded():
        log.info("index v%d is no longer live; no approximate index built for it", number)
        return None
    with open(source / META, encoding="utf-8") as fh:
        meta = json.load(fh)
    if (meta.get("dense") or {}).get("kind", EXACT) != EXACT or not meta.get("n_vectors"):
        return None
    started = time.monotonic()
    exact = faiss.read_index(str(source / DENSE))
    flat = faiss.downcast_index(exact.index)
    # A view of the exact index's own storage: no second copy of every vector while the new index is built.
    vectors = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)
    rows = faiss.vector_to_array(exact.id_map).astype(np.int64)
    dense = approximate_index(vectors, rows, cfg, superseded=superseded)
    del vectors, flat, exact
    if dense is None:
        log.info("index v%d was superseded while its approximate index was built", number)
        return None
    with publish_lock(index_dir):
        if superseded():
            log.info("index v%d was superseded while its approximate index was built", number)
            return None
        tmp = index_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            faiss.write_index(dense, str(tmp / DENSE))
            if (source / CHUNKS).is_file():
                _link_or_copy(source / CHUNKS, tmp / CHUNKS)
            else:
                _write_json(tmp / CHUNKS, {"vec_start": meta["vec_start"], "chunks": meta["chunks"]})
            (tmp / LEXICAL).mkdir()
            for part in (source / LEXICAL).iterdir():
                _link_or_copy(part, tmp / LEXICAL / part.name)
            # Same knowledge, same calibration: it was chosen on the exact search this index approximates.
            if (source / CALIBRATION).is_file():
                _link_or_copy(source / CALIBRATION, tmp / CALIBRATION)
            new = _next_number(index_dir)
            header = {k: v for k, v in meta.items() if k not in ("chunks", "vec_start")}
            header.update(
                format=FORMAT,
                version=new,
                created_at=datetime.now(timezone.utc).isoformat(),
                content_id=meta.get("content_id") or uuid.uuid4().hex,
                dense={"kind": cfg.approximate_kind, "from_version": number, **_dense_params(cfg, meta["n_vectors"])},
            )
            _write_json(tmp / META, header)
            _go_live(index_dir, tmp, new)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _prune(index_dir, keep_from=new - KEEP_VERSIONS + 1)
    log.info(
        "published index v%d: %s index over the %d vectors of v%d, built in %.0f s",
        new,
        cfg.approximate_kind,
        meta["n_vectors"],
        number,
        time.monotonic() - started,
    )
    return new


_BUILD_SCRIPT = (
    "import sys; from support_bot.knowledge.index import approximate_build_main; "
    "sys.exit(approximate_build_main(sys.argv[1:]))"
)


def start_approximate_build(index_dir: Path, number: int, cfg: IndexSettings) -> subprocess.Popen:
    """Run build_approximate for version `number` in a detached process, so it outlives a CLI or task that published."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-c", _BUILD_SCRIPT, str(Path(index_dir).resolve()), str(number), cfg.model_dump_json()],
        stdin=subprocess.DEVNULL,
        env=env,
        # Its own session: a Ctrl-C meant for the publishing command does not stop the build.
        start_new_session=True,
        close_fds=True,
    )
    # Reaped by a thread so a long-lived publisher (web process, Celery worker) collects no zombies.
    threading.Thread(target=proc.wait, name=f"approximate-index-v{number}", daemon=True).start()
    log.info("building an approximate index for v%d in process %d", number, proc.pid)
    return proc


def approximate_build_main(argv: Sequence[str]) -> int:
    """Entry point of the background build process: INDEX_DIR VERSION INDEX_SETTINGS_JSON."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    index_dir, number, cfg = Path(argv[0]), int(argv[1]), IndexSettings.model_validate_json(argv[2])
    # Serving queries matters more than finishing the build sooner; the exact version answers meanwhile.
    os.nice(10)
    try:
        build_approximate(index_dir, number, cfg)
    except FileNotFoundError:
        # The version (or the whole index dir) was pruned or removed while building: nothing left to publish.
        log.info("index v%d in %s is gone; approximate build dropped", number, index_dir)
    except Exception:
        log.exception("approximate index build for v%d in %s failed; exact search stays live", number, index_dir)
        return 1
    return 0


def _prune(index_dir: Path, *, keep_from: int) -> None:
    for number, path in _version_dirs(index_dir).items():
        if number < keep_from:
            shutil.rmtree(path, ignore_errors=True)
    now = time.time()
    for child in index_dir.glob(".tmp-*"):
        if now - child.stat().st_mtime > _STALE_TMP_S:
            shutil.rmtree(child, ignore_errors=True)


def install_version(index_dir: Path, source: Path) -> int:
    """Copy a complete version directory (e.g. from a backup) in as the next version and make it current."""
    with publish_lock(index_dir):
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
