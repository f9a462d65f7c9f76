"""Greetings, thanks, goodbyes and acknowledgements: answered politely instead of searched for in the help center.

A message counts as small talk only when every word of it is small talk ("hi", "thanks a lot!", "ok, bye"); one word
of anything else ("hi, where is my order?") sends it through retrieval as usual. No model is involved.

A yes or no right after the bot offered a person is answered too: "yes" hands the chat over, "no" moves on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from support_bot import handoff
from support_bot.chat.replies import (
    ANYTHING_ELSE,
    DECLINED_OFFER_TEXT,
    fixed_reply,
    handoff_reply,
    offers_person,
)
from support_bot.chat.turn import Turn, TurnEvent

# Words that make a message one kind of small talk, strongest first: "ok thanks bye" is a goodbye.
_KINDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("goodbye", frozenset({"bye", "goodbye", "cya", "farewell", "byebye"})),
    ("thanks", frozenset({"thanks", "thank", "thx", "ty", "cheers", "thankyou", "appreciated", "appreciate"})),
    ("greeting", frozenset({"hi", "hello", "hey", "hiya", "howdy", "greetings", "morning", "afternoon", "evening",
                            "yo", "heya", "hallo"})),
    ("ack", frozenset({"ok", "okay", "k", "kk", "cool", "great", "perfect", "alright", "fine", "nice", "awesome",
                       "understood", "noted", "excellent", "wonderful", "super", "sure"})),
)
# Words that may go with them without changing what the message is.
_FILLER = frozenset({
    "a", "all", "and", "anyway", "bot", "dear", "everyone", "for", "good", "got", "have", "help", "helped", "helpful",
    "it", "lot", "lots", "much", "oh", "so", "that", "that's", "thats", "the", "then", "there", "this", "very", "was",
    "well", "you", "your", "again", "day", "nice", "see", "later", "soon", "folks", "team", "guys", "sounds",
    "makes", "sense", "wow", "ah", "i", "many", "really", "just", "is", "now",
    "i'm", "im", "done", "else",
})
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_MAX_WORDS = 8

REPLIES = {
    "greeting": "Hello! What can I help you with today?",
    "thanks": "You're welcome! Is there anything else I can help you with?",
    "goodbye": "Thanks for chatting with us. Have a great day!",
    "ack": "Is there anything else I can help you with?",
}


@dataclass(frozen=True)
class SmallTalk:
    kind: str  # greeting | thanks | goodbye | ack
    reply: str


_VOCABULARY = _FILLER.union(*(kind_words for _kind, kind_words in _KINDS))


def _short_words(text: str) -> list[str]:
    """The message's words when it is short and has no figures ("order 123", "2 weeks" make it a real message)."""
    words = _WORD.findall((text or "").lower().replace("\u2019", "'"))
    if len(words) > _MAX_WORDS or re.search(r"\d", text or ""):
        return []
    return words


def small_talk(text: str) -> SmallTalk | None:
    """The kind of small talk the whole message is, with the reply; None for anything else."""
    words = _short_words(text)
    if not words or any(w not in _VOCABULARY for w in words):
        return None
    for kind, kind_words in _KINDS:
        if any(w in kind_words for w in words):
            return SmallTalk(kind, REPLIES[kind])
    return None


# Answers to "Would you like me to connect you with a person?".
_YES = frozenset({"yes", "yeah", "yea", "yep", "yup", "y", "sure", "ok", "okay", "please", "absolutely", "definitely",
                  "certainly", "course", "ahead", "do", "connect", "transfer", "person", "human", "agent", "someone",
                  "somebody", "me", "would", "be", "go", "of", "great", "fine", "alright", "right", "want", "like",
                  "i", "i'd", "id", "to", "with", "a", "an", "the", "that", "thanks", "thank", "you", "let's", "lets"})
_NO = frozenset({"no", "nope", "nah", "not", "don't", "dont", "never", "mind", "need", "needed", "necessary",
                 "good", "fine", "i'm", "im", "thanks", "thank", "you", "ok", "okay", "that's", "thats", "it", "all",
                 "right", "now", "for", "i", "am", "alright", "it's", "its"})
_NO_WORDS = frozenset({"no", "nope", "nah", "not", "don't", "dont", "never"})
_YES_WORDS = frozenset({"yes", "yeah", "yea", "yep", "yup", "y", "sure", "ok", "okay", "please", "absolutely",
                        "definitely", "certainly", "course", "ahead", "connect", "transfer"})


def answer_to_offer(text: str) -> str | None:
    """"yes" or "no" when the whole message answers an offer ("yes please", "sure", "no thanks", "not now"),
    else None. A negation anywhere wins: "ok, no" is a no."""
    words = _short_words(text)
    if not words:
        return None
    if any(w in _NO_WORDS for w in words):
        return "no" if all(w in _NO or w in _YES for w in words) else None
    if all(w in _YES for w in words) and any(w in _YES_WORDS for w in words):
        return "yes"
    return None


def small_talk_reply(turn: Turn) -> Iterator[TurnEvent] | None:
    """The reply to greetings, thanks and goodbyes, and to a yes or no to the offer of a person; None for anything
    else (and with chat.small_talk off)."""
    if not turn.settings.chat.small_talk:
        return None
    text, last = turn.original, turn.memory.last
    answer = answer_to_offer(text)
    if answer == "yes" and offers_person(turn.settings, last):
        return handoff_reply(turn, handoff.Trigger("request", "accepted the offer of a person"))
    if answer == "no" and offers_person(turn.settings, last):
        return fixed_reply(turn, DECLINED_OFFER_TEXT, abstained=False)
    if answer == "no" and last is not None and last.role == "bot" and last.text.rstrip().endswith(ANYTHING_ELSE):
        # "No, that's all" to "anything else?".
        return fixed_reply(turn, REPLIES["goodbye"], abstained=False)
    talk = small_talk(text)
    if talk is not None:
        return fixed_reply(turn, talk.reply, abstained=False)
    return None
