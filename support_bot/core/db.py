"""SQLAlchemy 2 engine and sessions; one engine per database URL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from support_bot.core.config import Settings

log = logging.getLogger(__name__)

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the web process read while the ingest worker writes; busy_timeout waits instead of failing.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def get_engine(settings: Settings) -> Engine:
    url = settings.resolved_database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def session_factory(settings: Settings) -> sessionmaker[Session]:
    # Sessions carry their settings so that work done after a commit (live-event wake-ups) finds the right bus.
    return sessionmaker(bind=get_engine(settings), expire_on_commit=False, info={"settings": settings})


@contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = session_factory(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# --- work that must wait for a commit -----------------------------------------------------------------------------

_AFTER_COMMIT = "support_bot.core.db.after_commit"  # {SessionTransaction: [callback, ...]}
_COMMITTED = "support_bot.core.db.committed"  # transactions whose commit has happened


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Call `callback()` once the session's outermost transaction commits; never when it (or its savepoint) rolls back.

    For work that must only see committed data and must not fail the commit: waking live streams, suggesting an FAQ
    entry from a resolved chat. A callback's error is logged.
    """
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is None:
        raise RuntimeError("after_commit needs a transaction in progress")
    session.info.setdefault(_AFTER_COMMIT, {}).setdefault(transaction, []).append(callback)


@event.listens_for(Session, "after_commit")
def _mark_committed(session: Session) -> None:
    if not session.info.get(_AFTER_COMMIT):
        return
    # Called for a savepoint's release too, while that savepoint is still the session's innermost transaction.
    transaction = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_COMMITTED, set()).add(transaction)


@event.listens_for(Session, "after_transaction_end")
def _run_after_commit(session: Session, transaction: SessionTransaction) -> None:
    pending_by_tx = session.info.get(_AFTER_COMMIT)
    if not pending_by_tx:
        return
    committed = session.info.get(_COMMITTED, set())
    was_committed = transaction in committed
    committed.discard(transaction)
    pending = pending_by_tx.pop(transaction, None)
    if not pending or not was_committed:
        return  # rolled back: what the callbacks were about is gone too
    if transaction.parent is not None:
        # A released savepoint: its callbacks wait for the enclosing transaction.
        pending_by_tx.setdefault(transaction.parent, []).extend(pending)
        return
    for callback in pending:
        try:
            callback()
        except Exception:  # the data is committed; the callback's work is best effort
            log.exception("work after a commit failed: %r", callback)


def migrate(settings: Settings) -> None:
    """Bring the schema to the newest Alembic revision (SQLite included)."""
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parents[2]
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.attributes["settings"] = settings
    settings.ensure_dirs()
    command.upgrade(cfg, "head")
