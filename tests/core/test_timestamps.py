"""Every stored time is UTC and reads back as an aware UTC datetime, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import DateTime, select

from support_bot.core.db import session_scope
from support_bot.models import AuditLog, Base, UtcDateTime

TOKYO = timezone(timedelta(hours=9))
NOON_UTC = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def test_every_time_column_is_utc_aware():
    plain = [
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, DateTime) or (
            isinstance(getattr(column.type, "impl", None), DateTime) and not isinstance(column.type, UtcDateTime)
        )
    ]
    assert plain == [], "use UtcDateTime for these columns"


def _stored(settings, moment: datetime) -> datetime:
    with session_scope(settings) as session:
        entry = AuditLog(action="test.time", created_at=moment)
        session.add(entry)
        session.flush()
        entry_id = entry.id
    with session_scope(settings) as session:
        return session.get(AuditLog, entry_id).created_at


def test_times_come_back_as_the_same_moment_in_utc(any_db):
    for given in (NOON_UTC, NOON_UTC.astimezone(TOKYO), NOON_UTC.replace(tzinfo=None)):
        back = _stored(any_db, given)
        assert back == NOON_UTC and back.utcoffset() == timedelta(0), given
        assert back.timestamp() == NOON_UTC.timestamp()


def test_comparisons_use_the_moment_not_the_wall_clock(any_db):
    _stored(any_db, NOON_UTC)
    an_hour_before = (NOON_UTC - timedelta(hours=1)).astimezone(TOKYO)  # 20:00 in Tokyo, 11:00 UTC
    with session_scope(any_db) as session:
        earlier = session.scalars(select(AuditLog.id).where(AuditLog.created_at < an_hour_before)).all()
        later = session.scalars(select(AuditLog.id).where(AuditLog.created_at > an_hour_before)).all()
    assert earlier == [] and len(later) == 1
