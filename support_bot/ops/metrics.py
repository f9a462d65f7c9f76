"""Prometheus metrics: what this process counts as it works, plus gauges read from the database at scrape time.

Counters and histograms (requests, generated tokens, safety events) live in `REGISTRY`, a registry of this module
rather than prometheus_client's global one, so that nothing else registered in the process (or a second app built
by tests) clashes with them. They count what *this process* did: run one process per container or port (as
docker-compose does) and let Prometheus scrape each one and sum them. Under several workers sharing one port
(`uvicorn --workers N`) a scrape reaches one random worker, and its counters are that worker's alone.

Queue length and ingest jobs are different: they are state shared by every process, so `DatabaseCollector` reads
them from the database at each scrape, and every process reports the same, correct values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.models import Conversation, IngestJob

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Chat answers stream for seconds, event streams for minutes: buckets reach past the usual 10 s.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120)
_TPS_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)

HTTP_REQUEST_DURATION = Histogram(
    "support_bot_http_request_duration_seconds",
    "HTTP requests, from receiving the request to the end of the response body (or to the client leaving).",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
GENERATED_TOKENS = Counter(
    "support_bot_generated_tokens",
    "Tokens the chat model generated for customer answers.",
    registry=REGISTRY,
)
TOKENS_PER_SECOND = Histogram(
    "support_bot_generation_tokens_per_second",
    "Tokens per second of each answer, from the start of generation (prompt processing included) to its end.",
    buckets=_TPS_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "support_bot_generation_time_to_first_token_seconds",
    "Seconds from the start of generation to the answer's first piece of text.",
    buckets=_TTFT_BUCKETS,
    registry=REGISTRY,
)
TRUNCATED_ANSWERS = Counter(
    "support_bot_truncated_answers",
    "Customer answers cut short after some of them was shown (the model's time limit passed, or it failed midway).",
    registry=REGISTRY,
)
SAFETY_EVENTS = Counter(
    "support_bot_safety_events",
    "Guard verdicts that changed what the customer got, as recorded (direction: input, output or source).",
    ["direction", "category", "action"],
    registry=REGISTRY,
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
INGEST_STATUSES = ("queued", "running", "succeeded", "failed")


def observe_request(*, method: str, route: str, status: int, seconds: float) -> None:
    """Count one HTTP request; unknown methods are folded into "other" so clients cannot add label values."""
    HTTP_REQUEST_DURATION.labels(
        method if method in _METHODS else "other", route, f"{status // 100}xx" if 100 <= status < 600 else "other"
    ).observe(seconds)


def answer_truncated() -> None:
    """Count one customer answer cut short after part of it was shown."""
    TRUNCATED_ANSWERS.inc()


def safety_event(*, direction: str, category: str, action: str) -> None:
    """Count one recorded safety event."""
    SAFETY_EVENTS.labels(direction, category, action).inc()


def observe_generation(pieces: Iterable[str], *, count_tokens: Callable[[str], int]) -> Iterator[str]:
    """Pass an answer's stream through unchanged, recording its tokens, tokens per second and time to first token.

    Timing starts when the stream is first read (the engines start generating then). An answer cut short (stop
    button, lost client, error) still counts the tokens it produced.
    """
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    try:
        for piece in pieces:
            # An empty piece is no text (a reader told there is nothing yet): it is not the first token.
            if first is None and piece:
                first = time.perf_counter()
                TIME_TO_FIRST_TOKEN.observe(first - started)
            parts.append(piece)
            yield piece
    finally:
        _record_generation(parts, time.perf_counter() - started, count_tokens)


def _record_generation(parts: list[str], seconds: float, count_tokens: Callable[[str], int]) -> None:
    if not parts:
        return
    try:
        tokens = count_tokens("".join(parts))
    except Exception:  # a metric must never break an answer; a piece is close to a token
        tokens = len(parts)
    GENERATED_TOKENS.inc(tokens)
    if tokens > 0 and seconds > 0:
        TOKENS_PER_SECOND.observe(tokens / seconds)


class _ProcessMetrics(Collector):
    """This process's own metrics (REGISTRY), to be combined with per-database gauges in one exposition."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()

    def describe(self) -> Iterable[Metric]:
        return []


class DatabaseCollector(Collector):
    """Gauges read from the database at every scrape, so they are right however many processes serve."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def describe(self) -> Iterable[Metric]:
        # Nothing to describe up front: registering must not query the database.
        return []

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "support_bot_metrics_database_up", "1 when the database gauges below could be read at this scrape."
        )
        try:
            families = self._read()
        except Exception as exc:  # an unreachable database must not make /metrics fail; alert on this gauge
            log.warning("metrics: cannot read the database: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]

    def _read(self) -> list[Metric]:
        with session_scope(self.settings) as session:
            handoff = dict(
                session.execute(
                    select(Conversation.status, func.count())
                    .where(Conversation.status.in_(("queued", "assigned")))
                    .group_by(Conversation.status)
                ).all()
            )
            oldest = session.scalar(
                select(func.min(Conversation.queued_at)).where(Conversation.status == "queued")
            )
            jobs = dict(session.execute(select(IngestJob.status, func.count()).group_by(IngestJob.status)).all())
        queue = GaugeMetricFamily(
            "support_bot_handoff_queue_length", "Conversations waiting in the handoff queue for a person."
        )
        queue.add_metric([], handoff.get("queued", 0))
        assigned = GaugeMetricFamily(
            "support_bot_handoff_assigned_conversations", "Conversations a person has claimed and not yet resolved."
        )
        assigned.add_metric([], handoff.get("assigned", 0))
        wait = GaugeMetricFamily(
            "support_bot_handoff_oldest_wait_seconds", "How long the longest-waiting queued conversation has waited."
        )
        wait.add_metric([], _seconds_since(oldest))
        ingest = GaugeMetricFamily("support_bot_ingest_jobs", "Ingest jobs by status.", labels=["status"])
        for status in (*INGEST_STATUSES, *sorted(set(jobs) - set(INGEST_STATUSES))):
            ingest.add_metric([status], jobs.get(status, 0))
        return [queue, assigned, wait, ingest]


def _seconds_since(moment: datetime | None) -> float:
    if moment is None:
        return 0.0
    if moment.tzinfo is None:  # SQLite hands back naive UTC times
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (datetime.now(timezone.utc) - moment).total_seconds())


def registry_for(settings: Settings) -> CollectorRegistry:
    """The registry one app exposes: this process's metrics plus the gauges of its own database."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProcessMetrics())
    registry.register(DatabaseCollector(settings))
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus text format of `registry`, with its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
