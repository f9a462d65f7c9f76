"""`support-bot backup` / `restore`: a round trip keeps every row and the index, across SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from sqlalchemy import func, select

from support_bot.ops.backup import backup, restore
from support_bot.cli import main
from support_bot.core.db import migrate, session_scope
from support_bot.core.errors import Conflict, InvalidInput
from support_bot.knowledge.index import read_current_version
from support_bot.knowledge.retriever import Retriever
from support_bot.models import Chunk, Conversation, Feedback, Message
from tests.conftest import FAQ


def _populate(settings) -> dict:
    """A knowledge source, a conversation with messages (one with citations) and feedback."""
    from ingest.pipeline import ingest_path
    from support_bot.chat.store import start_conversation

    migrate(settings)
    job = ingest_path(settings=settings, path=FAQ)
    assert job.status == "succeeded", job.error
    with session_scope(settings) as session:
        conversation, _token = start_conversation(session=session, settings=settings)
        q = Message(conversation_id=conversation.id, role="customer", text="Wie lange dauert die Rückerstattung? ✓")
        session.add(q)
        session.flush()
        a = Message(
            conversation_id=conversation.id,
            role="bot",
            text="Refunds take 5 days [1].",
            reply_to_id=q.id,
            citations=[{"n": 1, "chunk_id": "c1", "source": "northwind_faq", "entry_id": "ret-03"}],
        )
        session.add(a)
        session.flush()
        session.add(Feedback(message_id=a.id, rating="up", comment="thanks"))
        return {"conversation": conversation.id, "answer": a.id}


def _snapshot(settings) -> dict:
    with session_scope(settings) as session:
        messages = [
            (m.id, m.role, m.text, m.citations, m.reply_to_id, m.created_at.replace(tzinfo=None))
            for m in session.scalars(select(Message).order_by(Message.id))
        ]
        chunks = {c.id: (c.text, c.embedding) for c in session.scalars(select(Chunk))}
        return {
            "messages": messages,
            "chunks": chunks,
            "conversations": session.scalar(select(func.count()).select_from(Conversation)),
            "feedback": [(f.rating, f.comment) for f in session.scalars(select(Feedback))],
        }


def _top_entry(settings, question: str) -> str | None:
    hits = Retriever(settings).search(question, k=1).hits
    return hits[0].entry_id if hits else None


def test_round_trip_sqlite_to_fresh_sqlite(settings, embedder, tmp_path):
    ids = _populate(settings)
    before = _snapshot(settings)
    question = "How long does it take to get my refund?"
    expected = _top_entry(settings, question)
    archive = tmp_path / "b.tar.gz"
    manifest = backup(settings, archive)
    assert manifest["tables"]["messages"] == 2 and manifest["index_version"] >= 1

    target = settings.model_copy(update={"data_dir": tmp_path / "restored"})
    target.ensure_dirs()
    result = restore(target, archive)
    assert result["tables"]["chunks"] == len(before["chunks"])
    after = _snapshot(target)
    assert after == before
    assert read_current_version(target.index_dir) >= 1
    assert _top_entry(target, question) == expected is not None
    # New rows after a restore do not collide with restored ids.
    with session_scope(target) as session:
        session.add(Message(conversation_id=ids["conversation"], role="customer", text="and one more"))


@pytest.mark.postgres
def test_round_trip_sqlite_to_postgres_keeps_sequences(settings, embedder, tmp_path, postgres_url):
    _populate(settings)
    before = _snapshot(settings)
    archive = tmp_path / "b.tar.gz"
    backup(settings, archive)
    target = settings.model_copy(update={"data_dir": tmp_path / "pg", "database_url": postgres_url})
    target.ensure_dirs()
    restore(target, archive)
    assert _snapshot(target) == before
    # PostgreSQL's serial sequences were moved past the restored ids: a new message gets a fresh seq.
    with session_scope(target) as session:
        conv = session.scalar(select(Conversation))
        m = Message(conversation_id=conv.id, role="customer", text="after restore")
        session.add(m)
        session.flush()
        assert m.seq > max(x.seq for x in session.scalars(select(Message).where(Message.id != m.id)))


def test_restore_refuses_a_non_empty_database_unless_forced(settings, embedder, tmp_path):
    _populate(settings)
    archive = tmp_path / "b.tar.gz"
    backup(settings, archive)
    with pytest.raises(Conflict, match="not empty"):
        restore(settings, archive)
    before = _snapshot(settings)
    assert _snapshot(settings) == before  # the refusal touched nothing
    restore(settings, archive, force=True)
    assert _snapshot(settings) == before


def test_a_stale_archived_index_is_rebuilt_from_the_restored_chunks(settings, embedder, tmp_path):
    _populate(settings)
    archive = tmp_path / "b.tar.gz"
    backup(settings, archive)
    # Doctor the archive: drop one record from the archived index (chunks.json, or meta.json in format 1).
    doctored = tmp_path / "doctored.tar.gz"
    with tarfile.open(archive, "r:gz") as src, tarfile.open(doctored, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name in ("index/meta.json", "index/chunks.json"):
                doc = json.loads(data)
                if "chunks" in doc:
                    doc["chunks"] = doc["chunks"][:-1]
                    doc["vec_start"] = doc["vec_start"][:-1]
                if "n_chunks" in doc:
                    doc["n_chunks"] -= 1
                data = json.dumps(doc).encode()
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    target = settings.model_copy(update={"data_dir": tmp_path / "restored"})
    messages: list[str] = []
    restore(target, doctored, progress=messages.append)
    assert any("rebuilding" in m or "rebuilt" in m for m in messages), messages
    with session_scope(target) as session:
        n_chunks = session.scalar(select(func.count()).select_from(Chunk))
    from support_bot.knowledge.reader import load_current

    assert len(load_current(target)) == n_chunks


@pytest.mark.parametrize(
    "members, error",
    [
        ({"db/messages.jsonl": b"{}\n"}, "manifest.json is missing"),
        ({"manifest.json": b"not json"}, "not valid JSON"),
        ({"manifest.json": b'{"format": 99}'}, "unsupported backup format"),
        ({"../evil": b"x", "manifest.json": b'{"format": 1}'}, "unsafe member"),
    ],
)
def test_bad_archives_get_clear_errors(settings, tmp_path, members, error):
    path = tmp_path / "bad.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InvalidInput, match=error):
        restore(settings, path)


def test_not_an_archive(settings, tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(b"hello")
    with pytest.raises(InvalidInput, match="not a readable backup"):
        restore(settings, path)


def test_cli_round_trip(settings, embedder, tmp_path, monkeypatch, capsys):
    _populate(settings)
    archive = tmp_path / "cli.tar.gz"
    assert main(["backup", str(archive)]) == 0
    manifest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert manifest["tables"]["feedback"] == 1
    monkeypatch.setenv("SUPPORT_BOT_DATA_DIR", str(tmp_path / "cli-restored"))
    from support_bot.core.config import get_settings

    get_settings.cache_clear()
    assert main(["restore", str(archive)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["tables"]["messages"] == 2
    assert main(["restore", str(archive)]) == 2  # now not empty: refused with a clear error
    assert "not empty" in capsys.readouterr().err
