"""One customer turn: remember -> retrieve -> answer-or-abstain -> generate -> verify -> store.

`Assistant` holds what outlives a turn (settings, model, retriever, guards, the summaries queue, the answers this
process dropped) and runs each turn as a sequence of steps that live in the chat modules owning them:

    store       the message store: each customer message once, replies, what a re-post of a dropped answer gets
    memory      remember: history, the rolling summary, notes from the customer's other conversations
    screening   the input guard, screening retrieved entries for instructions aimed at the model
    replies     the replies needing no model: declining, handing over to a person, the model failing
    small_talk  greetings, thanks and goodbyes, and a yes or no to the offer of a person
    retrieve    the help-center search, follow-up questions, related questions
    prompt      the system prompt and the context window
    generate    the model's answer under the customer path's deadlines
    grounding   the rules a sentence must pass to be supported by a source
    verify      each sentence grounded and output-checked before it is shown; the quote of the best entry when none is
    turn        what the steps share: the turn's context and the events it streams

`preview` runs the same steps for the console's knowledge tester, with nothing stored.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from support_bot.chat.memory import Summaries, remember
from support_bot.chat.replies import abstain, handoff_if_called_for
from support_bot.chat.retrieve import related_questions, retrieve
from support_bot.chat.screening import Guards, check_input, redact, screen_sources
from support_bot.chat.small_talk import small_talk_reply
from support_bot.chat.store import (
    AbandonedAnswers,
    done_payload,
    episode_status,
    record_customer_message,
    silent_payload,
    wait_for_reply,
)
from support_bot.chat.turn import Turn, TurnEvent
from support_bot.chat.verify import verified_answer
from support_bot.core.config import Settings
from support_bot.core.errors import InvalidInput, SupportBotError
from support_bot.models import Message

# Seconds past llm.timeout_s before a replaced model is closed: the last answers from it are stored by then.
RETIRE_GRACE_S = 5.0


class Assistant:
    """Runs customer turns against the configured retriever and model."""

    def __init__(self, settings: Settings, *, engine: Any = None, retriever: Any = None):
        self.settings = settings
        self._engine = engine
        # The settings the last engine was chosen with, to notice a model changed on the settings page.
        self._engine_settings: Settings | None = None
        self._engine_choice_lock = threading.Lock()
        self._retriever = retriever
        self._retriever_lock = threading.Lock()
        self.guards = Guards(lambda: self.settings)
        # Summaries are written off the answer's path, one at a time.
        self.summaries = Summaries(lambda: self.settings, lambda: self.engine)
        self.abandoned = AbandonedAnswers()

    @property
    def settings(self) -> Settings:
        """The file/env settings with the console's changes applied, refreshed without a restart."""
        return self.runtime.current()

    @settings.setter
    def settings(self, value: Settings) -> None:
        from support_bot.ops.runtime_settings import RuntimeSettings

        self.runtime = RuntimeSettings(value)

    @property
    def engine(self):
        from support_bot.llm.registry import _cache_key, get_engine, retire_engine

        if self._engine is not None:
            return self._engine
        # Engines are cached per model settings, so a model chosen in the console answers from the next turn on;
        # the one it replaced is closed once no answer can still be coming from it (guarded_stream's time limit).
        settings = self.settings
        with self._engine_choice_lock:
            previous, self._engine_settings = self._engine_settings, settings
        if previous is not None and _cache_key(previous) != _cache_key(settings):
            retire_engine(previous, after_s=previous.llm.timeout_s + RETIRE_GRACE_S)
        return get_engine(settings)

    @property
    def retriever(self):
        """Built on first use, once, and imported only then: it loads the index and the embedding model."""
        if self._retriever is None:
            with self._retriever_lock:
                if self._retriever is None:
                    from support_bot.knowledge.retriever import get_retriever

                    self._retriever = get_retriever(self.settings)
        return self._retriever

    def warm_up(self) -> None:
        """Load the model and the guards now rather than on the first customer message."""
        self.engine  # noqa: B018
        # The retriever's query path is traced on its first query; do it now, not on a customer's.
        embedder = getattr(self.retriever, "embedder", None)
        if hasattr(embedder, "encode_query"):
            embedder.encode_query("warm-up")
        if self.settings.safety.enabled:
            self.guards.warm_up()

    def validate_text(self, text: str) -> str:
        text = (text or "").strip()
        if not text:
            raise InvalidInput("the message text is empty")
        limit = self.settings.chat.max_message_chars
        if len(text) > limit:
            raise InvalidInput(f"the message is too long ({len(text)} characters; the limit is {limit})")
        return text

    def refresh_summary(self, conversation_id: str, *, force: bool = False) -> str | None:
        """Fold messages newer than the summary into it now (see Summaries.refresh)."""
        return self.summaries.refresh(conversation_id, force=force)

    def queue_agent_summary(self, conversation_id: str) -> None:
        """Write the agent's summary of the problem off the customer's path (see handoff.write_agent_summary)."""
        self.summaries.agent_summary_later(conversation_id)

    def wait_background(self, timeout: float = 120.0) -> None:
        """Wait for queued summary work (tests and shutdown)."""
        self.summaries.wait(timeout)

    def turn(
        self,
        *,
        conversation_id: str,
        text: str,
        client_message_id: str | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[TurnEvent]:
        """Answer one customer message, yielding token events then done (or error)."""
        settings = self.settings
        text = self.validate_text(text)
        try:
            question, reply, created = record_customer_message(
                settings, conversation_id=conversation_id, text=redact(settings, text),
                client_message_id=client_message_id,
            )
        except Exception:
            if client_message_id:
                # The insert may be committed all the same (the connection dropped during COMMIT): a re-post that
                # finds it answers it at once instead of waiting for an answer nobody is writing.
                self.abandoned.mark_post(conversation_id, client_message_id)
            raise
        if reply is not None:
            yield TurnEvent("done", done_payload(reply))
            return
        answering = created
        try:
            status = episode_status(settings, conversation_id)
            if status in ("queued", "assigned"):
                # A person has (or is about to have) the chat: the message reached them, and the bot says nothing.
                yield TurnEvent("done", silent_payload(settings, conversation_id))
                return
            if not created:
                # Either another request is answering it now, or an earlier attempt died: wait, then answer ourselves.
                reply = wait_for_reply(settings, question, self.abandoned)
                if reply is not None:
                    yield TurnEvent("done", done_payload(reply))
                    return
                answering = True
            yield from self._answer(question, original=text, stop=stop)
        except (GeneratorExit, Exception):
            # The customer went away mid-answer, or the turn failed (the database went away): a re-post of the same
            # client_message_id answers it again now.
            if answering:
                self.abandoned.mark(question.id)
            raise

    def _answer(self, question: Message, *, original: str, stop: threading.Event | None) -> Iterator[TurnEvent]:
        """The steps of a turn whose message is stored and is the bot's to answer."""
        settings = self.settings
        turn = Turn(
            settings=settings, question=question, original=original, memory=remember(settings, question),
            summaries=self.summaries, stop=stop,
        )

        # Answered without the help center: refused by the input guard, handed to a person, small talk.
        early = check_input(turn, self.guards) or handoff_if_called_for(turn) or small_talk_reply(turn)
        if early is not None:
            yield from early
            return

        try:
            result = retrieve(turn, self.retriever)
        except SupportBotError as exc:
            yield TurnEvent("error", {"detail": exc.detail})
            return

        # Answer or abstain: nothing close enough was found, or all that was carries instructions for the model.
        if result.abstain or not result.hits:
            yield from abstain(turn, summarize=True, related=related_questions(settings, result.hits, self.guards))
            return
        hits = screen_sources(turn, result.hits[: settings.retrieval.top_k], self.guards)
        if not hits or hits[0] is not result.hits[0]:
            # The entry that matched was dropped (it carries instructions for the model): the next one down answers
            # some other question, so decline and offer the close questions instead of answering from it.
            yield from abstain(turn, summarize=True, related=related_questions(settings, result.hits, self.guards))
            return

        # Only sentences that pass grounding and the output guard are shown; else the best entry, quoted.
        yield from verified_answer(turn, hits, self.guards, engine=lambda: self.engine)
