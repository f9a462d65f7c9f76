"""Backup and restore of the database and the live index version as one portable archive.

The archive is a gzipped tar: `manifest.json`, one JSON-lines file per table under `db/`, and the files of the live
index version under `index/`. Rows are written by column name with portable encodings (ISO dates, base64 bytes), so
a backup taken on SQLite restores into PostgreSQL and the other way round.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, LargeBinary, MetaData, Table, delete, func, select, text
from sqlalchemy.types import Date, DateTime

from support_bot.core.config import Settings
from support_bot.core.errors import Conflict, InvalidInput

FORMAT = 1
MANIFEST = "manifest.json"
# Rows per INSERT batch on restore, and per fetch on backup: bounded memory for million-chunk knowledge bases.
BATCH = 1000
# Refuse archive members above this size (a defence against decompression bombs in a doctored archive).
MAX_MEMBER_BYTES = 8 * 2**30

Progress = Callable[[str], None]


def _metadata() -> MetaData:
    from support_bot.models import Base

    return Base.metadata


def _schema_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception:  # noqa: BLE001 - no alembic_version table: an empty, never-migrated database
            return None


def _encode(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            # SQLite hands back naive datetimes for timezone-aware columns; every stored time is UTC.
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _decoder(table: Table) -> Callable[[dict], dict]:
    binary = {c.name for c in table.columns if isinstance(c.type, LargeBinary)}
    # Timestamp columns are UtcDateTime, a TypeDecorator over DateTime: look through it.
    types = {c.name: getattr(c.type, "impl", c.type) for c in table.columns}
    dates = {name for name, kind in types.items() if isinstance(kind, DateTime)}
    days = {name for name, kind in types.items() if isinstance(kind, Date) and not isinstance(kind, DateTime)}
    known = {c.name for c in table.columns}

    def decode(row: dict) -> dict:
        out = {}
        for key, value in row.items():
            if key not in known:
                raise InvalidInput(f"backup column {table.name}.{key} does not exist in this schema")
            if value is not None and key in binary:
                value = base64.b64decode(value)
            elif value is not None and key in dates:
                value = datetime.fromisoformat(value)
            elif value is not None and key in days:
                value = date.fromisoformat(value)
            out[key] = value
        return out

    return decode


def _rows(engine: Engine, table: Table) -> Iterator[dict]:
    order = list(table.primary_key.columns) or list(table.columns)[:1]
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(select(table).order_by(*order))
        for row in result.mappings():
            yield {k: _encode(v) for k, v in row.items()}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(datetime.now(timezone.utc).timestamp())
    tar.addfile(info, io.BytesIO(data))


def backup(settings: Settings, out: Path, *, progress: Progress | None = None) -> dict:
    """Write the database and the live index version to `out` (a .tar.gz); returns the manifest."""
    from support_bot.core.db import get_engine
    from support_bot.knowledge.index import read_current_version

    say = progress or (lambda _msg: None)
    engine = get_engine(settings)
    revision = _schema_revision(engine)
    if revision is None:
        raise InvalidInput("the database has no schema yet; run `support-bot migrate` first")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    counts: dict[str, int] = {}
    index_version = read_current_version(settings.index_dir)
    index_files: list[str] = []
    with tarfile.open(tmp, "w:gz") as tar:
        for table in _metadata().sorted_tables:
            with tempfile.TemporaryFile() as spool:
                n = 0
                for row in _rows(engine, table):
                    spool.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
                    n += 1
                info = tarfile.TarInfo(f"db/{table.name}.jsonl")
                info.size = spool.tell()
                info.mtime = int(datetime.now(timezone.utc).timestamp())
                spool.seek(0)
                tar.addfile(info, spool)
            counts[table.name] = n
            say(f"{table.name}: {n} rows")
        if index_version:
            version_dir = settings.index_dir / f"v{index_version}"
            for path in sorted(p for p in version_dir.rglob("*") if p.is_file()):
                rel = path.relative_to(version_dir).as_posix()
                tar.add(path, arcname=f"index/{rel}", recursive=False)
                index_files.append(rel)
            say(f"index v{index_version}: {len(index_files)} files")
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "schema_revision": revision,
            "tables": counts,
            "index_version": index_version,
            "index_files": index_files,
        }
        _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode("utf-8"))
    tmp.replace(out)
    return manifest


def _safe_members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if not m.isfile() or m.name.startswith("/") or ".." in parts or not parts:
            raise InvalidInput(f"backup archive has an unsafe member {m.name!r}")
        if m.size > MAX_MEMBER_BYTES:
            raise InvalidInput(f"backup archive member {m.name!r} is too large ({m.size} bytes)")
        members[m.name] = m
    return members


def _read_manifest(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> dict:
    if MANIFEST not in members:
        raise InvalidInput("not a support-bot backup: manifest.json is missing")
    try:
        manifest = json.loads(tar.extractfile(members[MANIFEST]).read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"backup manifest is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInput(f"unsupported backup format {manifest.get('format') if isinstance(manifest, dict) else '?'}")
    return manifest


def _open_archive(path: Path) -> tarfile.TarFile:
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    try:
        return tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidInput(f"{path.name} is not a readable backup archive ({exc})") from None


def _migrate_to(settings: Settings, revision: str) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.util.exc import CommandError

    root = Path(__file__).resolve().parents[2]
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.attributes["settings"] = settings
    settings.ensure_dirs()
    try:
        command.upgrade(cfg, revision)
    except CommandError as exc:
        raise InvalidInput(f"the backup's schema revision {revision!r} is unknown to this version: {exc}") from None


def _has_rows(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [
            t.name
            for t in _metadata().sorted_tables
            if conn.execute(select(func.count()).select_from(t)).scalar()
        ]


def _reset_sequences(conn, tables: list[Table]) -> None:
    # Explicit ids leave PostgreSQL's serial sequences behind; the next insert would collide without this.
    for table in tables:
        for col in table.primary_key.columns:
            if col.autoincrement is True or (col.autoincrement == "auto" and col.type.python_type is int):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', '{col.name}'), "
                        f"COALESCE((SELECT MAX({col.name}) FROM {table.name}), 1), "
                        f"(SELECT MAX({col.name}) FROM {table.name}) IS NOT NULL)"
                    )
                )


def restore(
    settings: Settings,
    archive: Path,
    *,
    force: bool = False,
    rebuild_index: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Load a backup into this deployment's database and index; refuses a non-empty database unless `force`."""
    from support_bot.core.db import get_engine, migrate

    say = progress or (lambda _msg: None)
    with _open_archive(archive) as tar:
        members = _safe_members(tar)
        manifest = _read_manifest(tar, members)
        revision = manifest.get("schema_revision")
        if not isinstance(revision, str) or not revision:
            raise InvalidInput("backup manifest has no schema revision")
        engine = get_engine(settings)
        current = _schema_revision(engine)
        if current is None:
            # Restore at the backup's own schema, then upgrade: old backups load into newer versions.
            _migrate_to(settings, revision)
        elif current != revision:
            raise Conflict(
                f"the database is at schema {current} but the backup is at {revision}; restore into an empty database"
            )
        filled = _has_rows(engine)
        if filled and not force:
            raise Conflict(
                f"the database is not empty ({', '.join(filled[:5])} have rows); pass --force to replace its contents"
            )
        tables = _metadata().sorted_tables
        counts: dict[str, int] = {}
        with engine.begin() as conn:
            for table in reversed(tables):
                conn.execute(delete(table))
            for table in tables:
                name = f"db/{table.name}.jsonl"
                if name not in members:
                    counts[table.name] = 0
                    continue
                decode = _decoder(table)
                fh = tar.extractfile(members[name])
                batch: list[dict] = []
                n = 0
                for line_no, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        batch.append(decode(json.loads(line)))
                    except (ValueError, TypeError) as exc:
                        raise InvalidInput(f"backup file {name} line {line_no} is corrupt ({exc})") from None
                    if len(batch) >= BATCH:
                        conn.execute(table.insert(), batch)
                        n += len(batch)
                        batch.clear()
                if batch:
                    conn.execute(table.insert(), batch)
                    n += len(batch)
                counts[table.name] = n
                say(f"{table.name}: {n} rows")
            if conn.dialect.name == "postgresql":
                _reset_sequences(conn, tables)
        migrate(settings)
        index_version = _restore_index(settings, tar, members, manifest, rebuild=rebuild_index, say=say)
    return {"tables": counts, "schema_revision": revision, "index_version": index_version}


def _restore_index(settings: Settings, tar: tarfile.TarFile, members: dict, manifest: dict, *, rebuild: bool, say) -> int:
    from support_bot.core.db import session_scope
    from support_bot.knowledge.index import install_version
    from support_bot.knowledge.reader import load_version
    from support_bot.knowledge.publish import publish_index

    files = [n for n in members if n.startswith("index/")]
    if files and not rebuild:
        with tempfile.TemporaryDirectory(prefix="support-bot-restore-") as tmp:
            staged = Path(tmp) / "version"
            for name in files:
                dest = staged / name[len("index/"):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(members[name]) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            try:
                archived = {r.chunk_id for r in load_version(staged).records}
            except Exception as exc:  # noqa: BLE001 - a damaged index is rebuilt from the restored chunks
                say(f"archived index is unusable ({exc}); rebuilding it from the database")
            else:
                # The index was copied a moment after the tables: an ingest in between makes it stale.
                if archived == _live_chunk_ids(settings):
                    number = install_version(settings.index_dir, staged)
                    say(f"index restored as v{number}")
                    return number
                say("archived index does not match the restored knowledge; rebuilding it from the database")
    with session_scope(settings) as session:
        number = publish_index(session=session, settings=settings)
    say(f"index rebuilt from the database as v{number}")
    return number


def _live_chunk_ids(settings: Settings) -> set[str]:
    from support_bot.core.db import session_scope
    from support_bot.models import Chunk, Document, Source

    with session_scope(settings) as session:
        stmt = (
            select(Chunk.id)
            .join(Document, Chunk.document_id == Document.id)
            .join(Source, Chunk.source_id == Source.id)
            .where(Document.version == Source.active_version)
        )
        return set(session.scalars(stmt))
