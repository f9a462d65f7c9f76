"""The learning loop: each conversation a person resolved becomes a suggested FAQ entry for ops to review; the
approved ones are ingested together as their own knowledge source (settings.learning.source_name), so the next
customer who asks gets the answer with that entry cited.

    suggestions  what a resolved chat says, making (and merging) suggestions, the backfill, `subscribe`
    generalize   one chat's wording made general (no greetings, names, case numbers) and review flags
    review       edit, approve and reject; the approved entries as the learned source's file
    views        what the console lists and shows

Celery- and ingest-free: `ingest.learned` rebuilds the learned source through the normal ingest pipeline.
"""

from __future__ import annotations

from support_bot.learning.generalize import generalize, known_names, review_flags
from support_bot.learning.review import (
    LEARNED_FILENAME,
    MAX_REASON_CHARS,
    UNDECIDED,
    Outcome,
    approve,
    approved,
    edit,
    get_suggestion,
    reject,
    source_file,
)
from support_bot.learning.suggestions import (
    MAX_ANSWER_CHARS,
    MAX_QUESTION_CHARS,
    STATUSES,
    BackfillReport,
    backfill,
    conversation_pair,
    lock_learning,
    problem_and_resolution,
    subscribe,
    substantive,
    suggest_after_commit,
    suggest_from_conversation,
)
from support_bot.learning.views import (
    MAX_TRANSCRIPT_MESSAGES,
    detail_payload,
    list_suggestions,
    payload,
    payloads,
    status_counts,
    transcript,
)

__all__ = [
    "LEARNED_FILENAME",
    "MAX_ANSWER_CHARS",
    "MAX_QUESTION_CHARS",
    "MAX_REASON_CHARS",
    "MAX_TRANSCRIPT_MESSAGES",
    "STATUSES",
    "UNDECIDED",
    "BackfillReport",
    "Outcome",
    "approve",
    "approved",
    "backfill",
    "conversation_pair",
    "detail_payload",
    "edit",
    "generalize",
    "get_suggestion",
    "known_names",
    "list_suggestions",
    "lock_learning",
    "payload",
    "payloads",
    "problem_and_resolution",
    "reject",
    "review_flags",
    "source_file",
    "status_counts",
    "subscribe",
    "substantive",
    "suggest_after_commit",
    "suggest_from_conversation",
    "transcript",
]
