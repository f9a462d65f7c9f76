"""Human handoff: when a chat goes to a person, the agent queue, and what agents do with a chat.

    sentiment  the frustration score behind the sentiment trigger
    triggers   why a chat goes to a person (asked for one, upset, the bot stuck, safety, model failure) and its priority
    presence   agents' presence, load and names; who may work on conversations
    messages   a conversation's messages as the APIs, live events and prompts see them
    queue      the state machine (bot -> queued -> assigned -> resolved) and each waiting customer's place and wait
    texts      what the customer is told while waiting
    summaries  the model-written handover note for agents
    canned     saved replies
    views      the console's listings and conversation details

Each module imports only modules above it here; callers use the names below (`handoff.start_handoff(...)`). Resolving
publishes to hooks (`on_resolved`) rather than calling the learning loop, which sits above handoff.
"""

from __future__ import annotations

from support_bot.handoff.canned import (
    canned_payload,
    create_canned,
    delete_canned,
    list_canned,
)
from support_bot.handoff.messages import (
    customer_messages,
    emit_message,
    message_payload,
    public_messages,
    transcript,
    validate_text,
)
from support_bot.handoff.presence import (
    AGENT_ROLES,
    PRESENCE,
    agents_online,
    display_name,
    effective_presence,
    load_of,
    touch_presence,
)
from support_bot.handoff.queue import (
    MAX_EMAIL_CHARS,
    STATUSES,
    TRANSITIONS,
    QueueInfo,
    ResolvedHook,
    add_note,
    agent_reply,
    claim,
    estimate_wait_s,
    get_conversation,
    leave_offline_message,
    mark_helpful,
    on_resolved,
    queue_info,
    queue_position,
    rate,
    reopen,
    request_handoff,
    resolve,
    return_to_bot,
    set_presence,
    start_handoff,
    transfer,
    validate_email,
)
from support_bot.handoff.summaries import (
    AGENT_SUMMARY_INSTRUCTION,
    agent_summary_prompt,
    write_agent_summary,
)
from support_bot.handoff.texts import customer_status, handoff_text, wait_words
from support_bot.handoff.triggers import (
    MAX_DETAIL_CHARS,
    REASON_LABELS,
    REASONS,
    Trigger,
    abstain_trigger,
    asks_for_person,
    frustration,
    message_trigger,
    model_failure_trigger,
    normalize,
    priority_for,
    safety_trigger,
)
from support_bot.handoff.views import (
    agent_list,
    conversation_detail,
    conversation_summary_payload,
    list_conversations,
    queue_entries,
)

__all__ = [
    "AGENT_ROLES",
    "AGENT_SUMMARY_INSTRUCTION",
    "MAX_DETAIL_CHARS",
    "MAX_EMAIL_CHARS",
    "PRESENCE",
    "REASONS",
    "REASON_LABELS",
    "STATUSES",
    "TRANSITIONS",
    "QueueInfo",
    "ResolvedHook",
    "Trigger",
    "abstain_trigger",
    "add_note",
    "agent_list",
    "agent_reply",
    "agent_summary_prompt",
    "agents_online",
    "asks_for_person",
    "canned_payload",
    "claim",
    "conversation_detail",
    "conversation_summary_payload",
    "create_canned",
    "customer_messages",
    "customer_status",
    "delete_canned",
    "display_name",
    "effective_presence",
    "emit_message",
    "estimate_wait_s",
    "frustration",
    "get_conversation",
    "handoff_text",
    "leave_offline_message",
    "list_canned",
    "list_conversations",
    "load_of",
    "mark_helpful",
    "message_payload",
    "message_trigger",
    "model_failure_trigger",
    "normalize",
    "on_resolved",
    "priority_for",
    "public_messages",
    "queue_entries",
    "queue_info",
    "queue_position",
    "rate",
    "reopen",
    "request_handoff",
    "resolve",
    "return_to_bot",
    "safety_trigger",
    "set_presence",
    "start_handoff",
    "touch_presence",
    "transcript",
    "transfer",
    "validate_email",
    "validate_text",
    "wait_words",
    "write_agent_summary",
]
