"""Console analytics over a date range: volume, deflection, handoffs, wait and resolution times, feedback, safety.

A range is whole UTC days [start, end], both included. Which rows a figure counts:

- Conversation figures (per day, deflection, handoffs, wait and resolution times, ratings) take the conversations
  *started* in the range, so every rate's numerator is a part of its denominator.
- Thumbs count the feedback given in the range; safety events those recorded in it.

A conversation's handoff fields describe its latest episode (a resolved chat the customer writes to again starts a new
one), so a conversation counts once, under the reason it was last handed over for. `handoff_reason` is set when a chat
is queued and never cleared, so it marks "was handed to a person" even after the chat went back to the bot.

Counts are computed in SQL; medians and the per-day buckets in Python, so the same code runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import and_, case, exists, func, select
from sqlalchemy.orm import Session

from support_bot.core.errors import InvalidInput
from support_bot.handoff.triggers import REASON_LABELS, REASONS
from support_bot.models import AuditLog, Conversation, Feedback, Message, SafetyEvent

MAX_RANGE_DAYS = 366
# The tables the console shows and exports as CSV, in page order.
TABLES = ("summary", "daily", "reasons", "feedback", "ratings", "safety")
# Spreadsheets run a cell that starts with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


# --- the date range ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DateRange:
    """Whole UTC days from start to end, both included."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=timezone.utc)

    @property
    def until(self) -> datetime:
        """The midnight after the last day: ranges are half-open underneath, so no instant of `end` is lost."""
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=timezone.utc)

    def each_day(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.days)]

    def payload(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "days": self.days}


def parse_day(value: date | str | None, label: str) -> date | None:
    """A date from a form or query string (YYYY-MM-DD); None when left empty."""
    if value is None or isinstance(value, date):
        return value
    text = value.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{label}: {text[:40]!r} is not a date; use one like 2026-01-31") from None


def date_range(
    start: date | str | None, end: date | str | None, *, default_days: int = 30, today: date | None = None
) -> DateRange:
    """A checked range; a missing end is today (UTC) and a missing start makes the range `default_days` long."""
    first, last = parse_day(start, "start"), parse_day(end, "end")
    if last is None:
        last = today or datetime.now(timezone.utc).date()
    if first is None:
        first = last - timedelta(days=max(1, min(default_days, MAX_RANGE_DAYS)) - 1)
    if first > last:
        raise InvalidInput(f"the start ({first.isoformat()}) is after the end ({last.isoformat()})")
    days = (last - first).days + 1
    if days > MAX_RANGE_DAYS:
        raise InvalidInput(f"the range is {days} days long; choose at most {MAX_RANGE_DAYS} days")
    return DateRange(first, last)


def as_utc(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC.
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def within(column, rng: DateRange):
    return and_(column >= rng.since, column < rng.until)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# --- the figures -------------------------------------------------------------------------------------------------


@dataclass
class DayCount:
    day: date
    conversations: int
    handed_off: int


@dataclass
class Deflection:
    """Conversations with at least one customer message, and those of them no person was ever asked to take."""

    engaged: int
    deflected: int
    rate: float | None


@dataclass
class ReasonCount:
    reason: str
    label: str
    conversations: int
    share: float | None  # of all handed-off conversations


@dataclass
class Handoffs:
    conversations: int  # started in the range, with or without a customer message
    handed_off: int
    rate: float | None  # handed_off / conversations
    reasons: list[ReasonCount] = field(default_factory=list)


@dataclass
class HandoffTimes:
    """Medians over the handed-off conversations that got that far (seconds)."""

    waits: int
    median_wait_s: float | None
    resolutions: int
    median_resolution_s: float | None
    waiting: int  # still in the queue, so no wait time yet


@dataclass
class ThumbsRow:
    answered_by: str  # bot | agent
    up: int
    down: int
    up_share: float | None


@dataclass
class Thumbs:
    up: int
    down: int
    up_share: float | None
    by_author: list[ThumbsRow] = field(default_factory=list)


@dataclass
class Ratings:
    counts: dict[int, int]  # stars 1..5 -> conversations
    total: int
    mean: float | None


@dataclass
class SafetyCount:
    category: str
    action: str
    events: int


@dataclass
class Safety:
    total: int
    by_category: list[tuple[str, int]]
    rows: list[SafetyCount]


@dataclass
class Report:
    range: DateRange
    daily: list[DayCount]
    deflection: Deflection
    handoffs: Handoffs
    times: HandoffTimes
    thumbs: Thumbs
    ratings: Ratings
    safety: Safety


def conversations_per_day(session: Session, rng: DateRange) -> list[DayCount]:
    """Conversations started on each day of the range (days without any included), and how many were handed off."""
    days = {day: [0, 0] for day in rng.each_day()}
    rows = session.execute(
        select(Conversation.created_at, Conversation.handoff_reason).where(within(Conversation.created_at, rng))
    )
    for created_at, reason in rows:
        bucket = days.get(as_utc(created_at).date())
        if bucket is not None:
            bucket[0] += 1
            bucket[1] += reason is not None
    return [DayCount(day, total, handed) for day, (total, handed) in days.items()]


def _engaged():
    return exists().where(Message.conversation_id == Conversation.id, Message.role == "customer")


def deflection(session: Session, rng: DateRange) -> Deflection:
    """Deflection = conversations started in the range that have at least one customer message and were never handed
    to a person (no handoff reason, whatever their status now) / all conversations started in the range that have at
    least one customer message. Chats opened but never written in are left out of both."""
    engaged, deflected = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((Conversation.handoff_reason.is_(None), 1), else_=0)), 0),
        ).where(within(Conversation.created_at, rng), _engaged())
    ).one()
    engaged, deflected = int(engaged), int(deflected)
    return Deflection(engaged=engaged, deflected=deflected, rate=_share(deflected, engaged))


def handoffs(session: Session, rng: DateRange) -> Handoffs:
    """Handoff rate = conversations started in the range that were handed to a person / all started in the range;
    with counts by the reason each was (last) handed over for, every known reason listed, most frequent first."""
    counts: dict[str | None, int] = {}
    rows = session.execute(
        select(Conversation.handoff_reason, func.count())
        .where(within(Conversation.created_at, rng))
        .group_by(Conversation.handoff_reason)
    )
    for reason, n in rows:
        counts[reason] = int(n)
    total = sum(counts.values())
    handed = total - counts.get(None, 0)
    known = list(REASONS) + sorted(r for r in counts if r is not None and r not in REASONS)
    order = {reason: i for i, reason in enumerate(known)}
    reasons = [
        ReasonCount(reason, REASON_LABELS.get(reason, reason), n, _share(n, handed))
        for reason, n in ((reason, counts.get(reason, 0)) for reason in known)
    ]
    reasons.sort(key=lambda r: (-r.conversations, order[r.reason]))
    return Handoffs(conversations=total, handed_off=handed, rate=_share(handed, total), reasons=reasons)


def handoff_times(session: Session, rng: DateRange) -> HandoffTimes:
    """Median wait (queued -> a person took it) and resolution time (queued -> resolved) of handed-off chats.

    A transfer moves assigned_at to the moment of the transfer, so the wait ends at the first claim in the audit log
    after the chat was queued, and at assigned_at only where no claim was recorded. Chats that went back to the bot
    have no queued_at any more and are left out; a resolution counts only while the chat is still resolved (a resolved
    chat queued again has an older resolved_at that belongs to the episode before).
    """
    first_claim = (
        select(func.min(AuditLog.created_at))
        .where(
            AuditLog.action == "conversation.claim",
            AuditLog.target_id == Conversation.id,
            AuditLog.created_at >= Conversation.queued_at,
        )
        .correlate(Conversation)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Conversation.status, Conversation.queued_at, Conversation.assigned_at, Conversation.resolved_at, first_claim
        ).where(within(Conversation.created_at, rng), Conversation.queued_at.is_not(None))
    )
    waits: list[float] = []
    resolutions: list[float] = []
    waiting = 0
    for status, queued_at, assigned_at, resolved_at, claimed_at in rows:
        queued_at = as_utc(queued_at)
        if status == "queued":
            waiting += 1
            continue
        taken = as_utc(claimed_at) or as_utc(assigned_at)
        if status in ("assigned", "resolved") and taken is not None and taken >= queued_at:
            waits.append((taken - queued_at).total_seconds())
        resolved_at = as_utc(resolved_at)
        if status == "resolved" and resolved_at is not None and resolved_at >= queued_at:
            resolutions.append((resolved_at - queued_at).total_seconds())
    return HandoffTimes(
        waits=len(waits),
        median_wait_s=statistics.median(waits) if waits else None,
        resolutions=len(resolutions),
        median_resolution_s=statistics.median(resolutions) if resolutions else None,
        waiting=waiting,
    )


def thumbs(session: Session, rng: DateRange) -> Thumbs:
    """Thumbs up and down given in the range, on the bot's answers and on agents' replies."""
    counts = {("bot", "up"): 0, ("bot", "down"): 0, ("agent", "up"): 0, ("agent", "down"): 0}
    rows = session.execute(
        select(Message.role, Feedback.rating, func.count())
        .join(Message, Message.id == Feedback.message_id)
        .where(within(Feedback.created_at, rng))
        .group_by(Message.role, Feedback.rating)
    )
    for role, rating, n in rows:
        counts[(role, rating)] = counts.get((role, rating), 0) + int(n)
    authors = sorted({role for role, _ in counts}, key=lambda r: (r != "bot", r != "agent", r))
    by_author = []
    for role in authors:
        up, down = counts.get((role, "up"), 0), counts.get((role, "down"), 0)
        by_author.append(ThumbsRow(role, up, down, _share(up, up + down)))
    up = sum(row.up for row in by_author)
    down = sum(row.down for row in by_author)
    return Thumbs(up=up, down=down, up_share=_share(up, up + down), by_author=by_author)


def ratings(session: Session, rng: DateRange) -> Ratings:
    """The customers' 1-5 ratings of conversations started in the range (the latest rating of each)."""
    counts = {stars: 0 for stars in range(1, 6)}
    rows = session.execute(
        select(Conversation.rating, func.count())
        .where(within(Conversation.created_at, rng), Conversation.rating.is_not(None))
        .group_by(Conversation.rating)
    )
    for stars, n in rows:
        if stars in counts:
            counts[stars] += int(n)
    total = sum(counts.values())
    mean = sum(stars * n for stars, n in counts.items()) / total if total else None
    return Ratings(counts=counts, total=total, mean=mean)


def safety_events(session: Session, rng: DateRange) -> Safety:
    """Guard verdicts recorded in the range, by category and by category and action; most frequent first."""
    rows = [
        SafetyCount(category, action, int(n))
        for category, action, n in session.execute(
            select(SafetyEvent.category, SafetyEvent.action, func.count())
            .where(within(SafetyEvent.created_at, rng))
            .group_by(SafetyEvent.category, SafetyEvent.action)
        )
    ]
    rows.sort(key=lambda r: (-r.events, r.category, r.action))
    per_category: dict[str, int] = {}
    for row in rows:
        per_category[row.category] = per_category.get(row.category, 0) + row.events
    by_category = sorted(per_category.items(), key=lambda item: (-item[1], item[0]))
    return Safety(total=sum(per_category.values()), by_category=by_category, rows=rows)


def report(session: Session, rng: DateRange) -> Report:
    """Every figure for the range."""
    return Report(
        range=rng,
        daily=conversations_per_day(session, rng),
        deflection=deflection(session, rng),
        handoffs=handoffs(session, rng),
        times=handoff_times(session, rng),
        thumbs=thumbs(session, rng),
        ratings=ratings(session, rng),
        safety=safety_events(session, rng),
    )


def payload(rep: Report) -> dict[str, Any]:
    """The report as JSON-ready data."""
    return {
        "range": rep.range.payload(),
        "daily": [
            {"date": d.day.isoformat(), "conversations": d.conversations, "handed_off": d.handed_off}
            for d in rep.daily
        ],
        "deflection": {"engaged": rep.deflection.engaged, "deflected": rep.deflection.deflected,
                       "rate": rep.deflection.rate},
        "handoffs": {
            "conversations": rep.handoffs.conversations,
            "handed_off": rep.handoffs.handed_off,
            "rate": rep.handoffs.rate,
            "reasons": [vars(r).copy() for r in rep.handoffs.reasons],
        },
        "times": vars(rep.times).copy(),
        "thumbs": {
            "up": rep.thumbs.up, "down": rep.thumbs.down, "up_share": rep.thumbs.up_share,
            "by_author": [vars(r).copy() for r in rep.thumbs.by_author],
        },
        "ratings": {
            "counts": {str(stars): n for stars, n in rep.ratings.counts.items()},
            "total": rep.ratings.total,
            "mean": rep.ratings.mean,
        },
        "safety": {
            "total": rep.safety.total,
            "by_category": [{"category": c, "events": n} for c, n in rep.safety.by_category],
            "rows": [vars(r).copy() for r in rep.safety.rows],
        },
    }


# --- tables and CSV ----------------------------------------------------------------------------------------------


@dataclass
class Table:
    """One table as the console shows it and exports it: the page and the CSV come from the same rows."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def tables(rep: Report) -> dict[str, Table]:
    """Every table of the report, keyed by name (TABLES order)."""
    d, h, t, th, ra = rep.deflection, rep.handoffs, rep.times, rep.thumbs, rep.ratings
    summary = [
        ["conversations started", h.conversations],
        ["conversations with a customer message", d.engaged],
        ["resolved by the bot without a person", d.deflected],
        ["deflection rate", _rounded(d.rate)],
        ["handed to a person", h.handed_off],
        ["handoff rate", _rounded(h.rate)],
        ["median wait for a person (s)", _rounded(t.median_wait_s, 1)],
        ["chats a person took", t.waits],
        ["median resolution time (s)", _rounded(t.median_resolution_s, 1)],
        ["chats a person resolved", t.resolutions],
        ["still waiting in the queue", t.waiting],
        ["thumbs up", th.up],
        ["thumbs down", th.down],
        ["thumbs up share", _rounded(th.up_share)],
        ["ratings", ra.total],
        ["mean rating", _rounded(ra.mean, 2)],
        ["safety events", rep.safety.total],
    ]
    out = [
        Table("summary", "Summary", ["metric", "value"], summary),
        Table(
            "daily", "Conversations per day", ["date", "conversations", "handed_off"],
            [[day.day, day.conversations, day.handed_off] for day in rep.daily],
        ),
        Table(
            "reasons", "Handoff reasons", ["reason", "label", "conversations", "share"],
            [[r.reason, r.label, r.conversations, _rounded(r.share)] for r in h.reasons],
        ),
        Table(
            "feedback", "Thumbs up and down", ["answered_by", "thumbs_up", "thumbs_down", "up_share"],
            [[r.answered_by, r.up, r.down, _rounded(r.up_share)] for r in th.by_author]
            + [["all", th.up, th.down, _rounded(th.up_share)]],
        ),
        Table(
            "ratings", "Ratings", ["stars", "conversations", "share"],
            [[stars, n, _rounded(_share(n, ra.total))] for stars, n in sorted(ra.counts.items(), reverse=True)],
        ),
        Table(
            "safety", "Safety events", ["category", "action", "events"],
            [[r.category, r.action, r.events] for r in rep.safety.rows],
        ),
    ]
    return {table.name: table for table in out}


def csv_cell(value: Any) -> str:
    """One cell as text; text a spreadsheet would run as a formula gets a leading quote."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def to_csv(table: Table) -> str:
    """The table as CSV: a header row of column names, then the rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([csv_cell(c) for c in table.columns])
    for row in table.rows:
        writer.writerow([csv_cell(c) for c in row])
    return buffer.getvalue()
