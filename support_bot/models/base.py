"""The declarative base and the helpers every model uses."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import ClassVar

from sqlalchemy import DateTime
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


class UtcDateTime(TypeDecorator[datetime]):
    """A moment stored as UTC and always read back as an aware UTC datetime, on SQLite and PostgreSQL alike.

    SQLite keeps only the wall clock of what it is given and hands back naive values, which `.timestamp()` and
    comparisons with aware values would take for local time; PostgreSQL hands back the session's time zone. A naive
    value given to the database is taken as UTC, the convention throughout the code.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    # Every datetime column is UtcDateTime unless a model says otherwise.
    type_annotation_map: ClassVar[dict] = {datetime: UtcDateTime}
