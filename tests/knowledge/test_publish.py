"""Publishing from the database: two publishes at once leave the newer knowledge live, never the older snapshot."""

from __future__ import annotations

import fcntl
import json
import threading

import numpy as np

import support_bot.knowledge.index as index_module
import support_bot.knowledge.publish as publish_module
from support_bot.core.db import session_scope
from support_bot.knowledge.index import read_current_version
from support_bot.knowledge.publish import publish_index
from support_bot.models import Chunk, Document, Source

DIM = 8


def _add_live_source(settings, name: str) -> None:
    """A source whose version 1 is live, with one embedded chunk (no model needed)."""
    vector = np.random.default_rng(len(name)).normal(size=DIM).astype(np.float32)
    with session_scope(settings) as s:
        source = Source(name=name, kind="faq_csv", active_version=1)
        s.add(source)
        s.flush()
        doc = Document(source_id=source.id, version=1, filename=f"{name}.csv", sha256="0" * 64, n_chunks=1)
        s.add(doc)
        s.flush()
        s.add(
            Chunk(
                source_id=source.id, document_id=doc.id, ordinal=0, entry_id=f"{name}-1", title=f"About {name}?",
                text=f"About {name}? Yes.", extra={"n_vectors": 1, "embedding_model": "test"},
                embedding=(vector / np.linalg.norm(vector)).tobytes(),
            )
        )


def _live_sources(settings) -> set[str]:
    number = read_current_version(settings.index_dir)
    meta = json.loads((settings.index_dir / f"v{number}" / "meta.json").read_text(encoding="utf-8"))
    return set(meta["sources"])


class WatchedFlock:
    """fcntl as the index module uses it, noting when a publisher has to wait for the publish lock."""

    LOCK_EX, LOCK_UN, LOCK_NB = fcntl.LOCK_EX, fcntl.LOCK_UN, fcntl.LOCK_NB

    def __init__(self, waiting: threading.Event) -> None:
        self.waiting = waiting

    def flock(self, fh, operation: int) -> None:
        if operation == fcntl.LOCK_EX:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                self.waiting.set()
        fcntl.flock(fh, operation)


def test_of_two_publishes_at_once_the_newer_snapshot_goes_live_last(db, monkeypatch):
    """The first publisher reads the database, then the second commits a new source and publishes; whatever order
    the two then write in, the live version holds the new source."""
    _add_live_source(db, "alpha")
    first_has_read = threading.Event()
    # The first publisher goes on once the second one has finished, or has to wait for the first (the lock is held).
    go_on = threading.Event()
    monkeypatch.setattr(index_module, "fcntl", WatchedFlock(go_on))
    real_write = publish_module.write_version

    def write_version(*args, **kwargs):
        if threading.current_thread().name == "first":
            first_has_read.set()
            assert go_on.wait(60), "the second publisher neither finished nor waited"
        return real_write(*args, **kwargs)

    monkeypatch.setattr(publish_module, "write_version", write_version)
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            with session_scope(db) as s:
                publish_index(session=s, settings=db)
        except Exception as exc:  # noqa: BLE001 - reported below, on the test's thread
            errors.append(exc)
        finally:
            if threading.current_thread().name == "second":
                go_on.set()

    first = threading.Thread(target=publish, name="first")
    first.start()
    assert first_has_read.wait(60)
    _add_live_source(db, "beta")
    second = threading.Thread(target=publish, name="second")
    second.start()
    first.join(60)
    second.join(60)
    assert not first.is_alive() and not second.is_alive() and errors == []
    assert read_current_version(db.index_dir) == 2
    assert _live_sources(db) == {"alpha", "beta"}


def test_publish_lock_is_reentrant_on_one_thread(tmp_path):
    def held_elsewhere() -> bool:
        with open(tmp_path / ".publish.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False

    with index_module.publish_lock(tmp_path):
        with index_module.publish_lock(tmp_path):
            assert held_elsewhere()
        # Leaving the inner block keeps the outer one's hold.
        assert held_elsewhere()
    assert not held_elsewhere()
