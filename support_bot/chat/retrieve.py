"""The retrieve step: the help-center entries for a question (a follow-up read with the conversation before it),
and the related questions offered when the bot declines."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from support_bot.chat.screening import Guards
from support_bot.chat.turn import Turn
from support_bot.core.config import RetrievalSettings, Settings

_WORD = re.compile(r"[\w'’&-]+")
_FOLLOW_UP_START = re.compile(r"^\W*(and|but|also|so|or|plus|then|what about|how about|what if)\b", re.I)
# Words that stand for something named before; "that", "this", "there" and "one" only in some places (_refers_back).
_PRONOUNS = frozenset("it its it's they them their theirs those these same such he she him her his".split())
_BE = frozenset("is are was were isn't aren't wasn't weren't".split())
# A definite noun phrase ("check the balance") often names something the conversation already introduced.
_DEFINITE = re.compile(r"\bthe\s+\w", re.I)
# The words that open a continuation; what follows them is the new part of the question.
_OPENER = re.compile(
    r"^\W*(?:(?:and|but|also|so|or|plus|then|ok|okay)\b\W*)*(?:(?:what|how)\s+about\b|what\s+if\b)?\W*", re.I
)
# A remainder starting with one of these is a whole question of its own ("and how long does that take?"); any
# other remainder is a fragment ("for kids", "express", "if I'm immunocompromised") to be read into the previous one.
_QUESTION_START = re.compile(
    r"^(?:how|what|when|where|which|who|whom|whose|why|is|are|was|were|am|do|does|did|can|could|will|would|should|"
    r"shall|may|might|must|have|has|had)\b",
    re.I,
)
# A fragment led by one of these stands for the previous question's phrase led by the same word ("safe for
# adults?" + "and for kids?").
_PARALLEL_LEAD = frozenset(
    "for if with without in on to at by from after before during when while about under over".split()
)
# A noun phrase opened by a determiner, running to the first word that cannot be inside one ("the Pfizer and Moderna
# vaccines", "the vaccine" in "for the vaccine to take effect").
_DEFINITE_NP = re.compile(
    r"\b(?:the|this|that|these|those|your|my|our)\s+(?:(?:[\w'’-]+|&)\s+)*?[\w'’-]+(?=\s*(?:[?.!,;:]|$|\s+(?:to|for|if|"
    r"with|without|in|on|at|by|from|after|before|during|when|while|of|is|are|was|were|be|do|does|did|can|could|"
    r"will|would|should|have|has|that|which|who)\b))",
    re.I,
)
# Words that do not carry a question's subject: function words, question scaffolding, light verbs, pronouns,
# politeness, and the "how long / how much" of the question's intent (the follow-up brings its own intent).
_NOT_SUBJECT = frozenset(
    """a an the and or but so if then than of to in on at by for with from about into over after before up out
    off against between through during without within under via per until since because while as i me my mine we
    us our ours you your yours he him his she her it its they them their theirs this that these those there here
    is are was were be been being am do does did done doing have has had having can could will would shall
    should may might must what which who whom whose when where why how not no yes please hi hello hey thanks
    thank ok okay get gets got getting make take go need want know tell like let also just still even very
    really too much many long often far soon one ones same such any some all each every other another more most
    kind sort way thing things something anything i'm i've i'd i'll you're we're they're it's that's what's
    don't doesn't can't won't isn't aren't""".split()
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.replace("’", "'"))


def _refers_back(text: str) -> bool:
    """Whether a word of the question stands for something named before: a pronoun ("is it free?", "how long does
    that take?"), "there" as a place ("how long to get there?"), "one" for a noun ("the blue one"). Not the
    existential "is there" / "there are", a relative "that" after a noun ("medications that interfere") or "one"
    counting a noun ("the one dose vaccine"): those name nothing earlier."""
    words = [w.lower() for w in _words(text)]
    for i, word in enumerate(words):
        before = words[i - 1] if i else ""
        after = words[i + 1] if i + 1 < len(words) else ""
        if word in _PRONOUNS:
            return True
        if word in ("that", "this") and (not before or before in _NOT_SUBJECT):
            return True
        if word == "there" and before not in _BE and after not in _BE and after != "'s":
            return True
        if word in ("one", "ones") and (not after or after in _NOT_SUBJECT):
            return True
    return False


def _leans_on_previous(text: str) -> bool:
    """The clear cues of a follow-up: a continuation opener, a word that refers back, or only a few words."""
    return bool(_FOLLOW_UP_START.search(text) or _refers_back(text) or len(_words(text)) <= 3)


def looks_like_follow_up(text: str) -> bool:
    """Whether a question seems to lean on the one before: it opens like a continuation ("and for kids?", "what
    about express?"), refers back ("is it free?", "how long does that take?", "check the balance") or is only a few
    words."""
    return _leans_on_previous(text) or bool(_DEFINITE.search(text))


def subject_words(text: str) -> list[str]:
    """The words of a question that name what it is about: "How long does standard shipping take?" -> standard,
    shipping."""
    out = []
    for word in _words(text):
        core = word.strip("'-&")
        if len(core) > 1 and not core.isdigit() and core.lower() not in _NOT_SUBJECT:
            out.append(word)
    return out


def _fragment(text: str) -> str | None:
    """What a question adds when it is only a fragment to be read into the previous one ("and for kids?" -> "for
    kids?"); None for a whole question."""
    rest = text[_OPENER.match(text).end():].strip()
    opened = len(rest) < len(text.strip())
    if rest and not _QUESTION_START.match(rest) and (opened or len(_words(rest)) <= 3):
        return rest
    return None


def read_into(previous: str, fragment: str) -> str:
    """The previous question with a fragment read into it: a part it names again in other words is replaced
    ("How effective are the Pfizer vaccines?" + "the Moderna one" -> "How effective are the Moderna vaccines?";
    "... safe for adults?" + "for kids?" -> "... safe for kids?"), anything else is added to it ("How much does
    shipping cost? express")."""
    fragment = fragment.strip()
    words = _words(fragment)
    if not words:
        return previous
    # Read into the middle of the previous question, the fragment's own question mark would end it there.
    inner = fragment.rstrip("?.! ")
    if re.search(r"\bones?\b", fragment, re.I):
        # "one" stands for the head noun of a noun phrase of the previous question, which the fragment replaces.
        match = _DEFINITE_NP.search(previous)
        if match:
            head = _words(match.group(0))[-1]
            phrase = re.sub(r"\bones?\b", head, inner, count=1, flags=re.I)
            return previous[: match.start()] + phrase + previous[match.end():]
    lead = words[0].lower()
    if lead in _PARALLEL_LEAD:
        match = re.search(rf"\b{lead}\b[^?.!,;]*", previous, re.I)
        if match:
            return previous[: match.start()] + inner + previous[match.end():]
    return f"{previous} {fragment}"


def _resolved_previous(earlier: Sequence[str]) -> str:
    """The newest earlier question that names anything, itself resolved when it leaned on the ones before it."""
    for i in range(len(earlier) - 1, -1, -1):
        text = earlier[i].strip()
        if not subject_words(text):
            continue  # "thanks", "ok": nothing to carry
        if _leans_on_previous(text):
            # Only the clear cues reach further back: a question that merely says "the" names its own subject.
            return rewrite_follow_up(text, earlier[:i]) or text
        return text
    return ""


def rewrite_follow_up(text: str, earlier: Sequence[str]) -> str | None:
    """The question as it would read on its own, given the customer's earlier questions (oldest first); None when
    there is nothing to carry over.

    A fragment ("and for kids?", "what about express?", "the blue one") is read into the previous question, whose
    intent it keeps: "How much does shipping cost? express?". A whole question that refers back ("is that free?",
    "how do I check the balance?") keeps its own intent and gets the previous question's subject, which it leaves
    out: "is that free? repair tents backpacks".
    """
    previous = _resolved_previous(earlier)
    if not previous:
        return None
    rest = _fragment(text)
    if rest is not None:
        return read_into(previous, rest)
    subject = [w for w in subject_words(previous) if w.lower() not in {t.lower() for t in _words(text)}]
    return f"{text.strip()} {' '.join(subject)}" if subject else None


@dataclass(frozen=True)
class Searched:
    """What the choice between two readings of a question needs to know of one search."""

    top_score: float | None
    abstain: bool


def prefer_rewrite(original: Searched, rewritten: Searched, *, follow_up: bool, margin: float,
                   floor: float | None = None) -> bool:
    """Whether the rewritten question's search should stand for the customer's: only for a follow-up-like question,
    only when the rewrite finds an entry to answer with, and only when that entry matches the rewrite by at least
    `margin` more than anything matches the question as written.

    An entry to answer with is one the rewrite's search answers, or, when `floor` is given (rewrite_floor), one that
    scores at least `floor`. The margin holds when the question as written abstains too: the earlier subject's
    words raise the scores of entries near the earlier question, and without it a new question that nothing answers
    would be answered with the earlier topic's entry instead of declined.
    """
    if not follow_up or rewritten.top_score is None:
        return False
    if rewritten.abstain and (floor is None or rewritten.top_score < floor):
        return False
    if original.top_score is None:
        return True
    return rewritten.top_score >= original.top_score + margin


def rewrite_floor(text: str, cfg: RetrievalSettings, *, stays_on_entry: bool = False) -> float | None:
    """The score at which a rewrite of `text` is answered even when its own search would decline: halfway between
    the knowledge base's two cut-offs (min_score_distinct and min_score, calibrated with it) for a question that
    cannot be read on its own (a continuation, a word standing for something named before, a few words); None for
    one that only says "the".

    A rewrite carries the words of two questions, and its top entry scores below what a whole question about that
    entry would: on covid-faq right rewrites of "and the Johnson & Johnson one?" or "what if I don't have
    insurance?" reach 0.74-0.79 against a cut-off of 0.80. A question that cannot stand alone is about the
    conversation's topic, which the knowledge base covered a turn ago; halfway answers those and, of new questions
    asked right after an unrelated one, declines as many as the cut-off itself (bench/followups.py; the lower cut-off
    alone declines fewer).

    A rewrite whose top entry is the one the bot's last answer rested on (`stays_on_entry`: "does it contain pork?"
    after the ingredients were quoted) is the customer asking more about what they were just told: its floor is
    retrieval.related_min_score, the score at which an entry is close enough to offer as a related question.
    """
    if not _leans_on_previous(text):
        return None
    if stays_on_entry:
        return min(cfg.related_min_score, cfg.min_score_distinct)
    return (cfg.min_score_distinct + cfg.min_score) / 2


def _searched(result: Any) -> Searched:
    return Searched(top_score=result.hits[0].score if result.hits else None, abstain=result.abstain)


def last_answer_entry(turn: Turn) -> tuple[str, str] | None:
    """(source, entry id) of the entry the bot's reply just before this question rested on (its first citation);
    None when that reply declined or cited nothing, or someone else spoke last."""
    last = turn.memory.last
    if last is None or last.role != "bot" or last.abstained:
        return None
    for cited in last.citations or []:
        if isinstance(cited, dict) and cited.get("entry_id") is not None:
            return str(cited.get("source")), str(cited["entry_id"])
    return None


def rests_on_last_answer(turn: Turn, result: Any) -> bool:
    """Whether `result`'s top entry is the one the bot's reply just before this question rested on (rewrite_floor's
    `stays_on_entry`)."""
    previous = last_answer_entry(turn)
    return previous is not None and bool(result.hits) and (
        str(result.hits[0].source), str(result.hits[0].entry_id)) == previous


def customer_questions(turn: Turn) -> list[str]:
    """The customer's earlier messages in the turn's history window, oldest first."""
    return [m.content for m in turn.memory.history if m.role == "user"]


def retrieve(turn: Turn, retriever: Any) -> Any:
    """The retriever's result for the turn's question: hits and whether it abstains. Raises SupportBotError."""
    settings, text = turn.settings, turn.question.text
    # Enough hits for the answer and for the related questions of a decline.
    k = max(settings.retrieval.top_k, settings.retrieval.related_questions)
    result = retriever.search(text, k=k)
    follow_up = looks_like_follow_up(text)
    rewritten = rewrite_follow_up(text, customer_questions(turn)) if follow_up else None
    if rewritten is None:
        return result
    # Both readings are searched: a new question right after an answer must not be answered with the earlier
    # entry, and a follow-up that lands on some entry when read alone must still reach the one it is about.
    retry = retriever.search(rewritten, k=k)
    # The cut-offs the knowledge base is searched with: its own when calibrated (Retriever.settings_for).
    cfg = retriever.settings_for(retriever.reader.current())
    floor = rewrite_floor(text, cfg, stays_on_entry=rests_on_last_answer(turn, retry))
    if prefer_rewrite(_searched(result), _searched(retry), follow_up=follow_up,
                      margin=settings.retrieval.follow_up_margin, floor=floor):
        if retry.abstain:
            # Its own search would decline; the conversation answers it (rewrite_floor).
            return replace(retry, abstain=False,
                           reason=f"follow-up rewrite's top entry score {retry.hits[0].score:.2f} reaches its floor")
        return retry
    return result


def related_questions(settings: Settings, hits: list[Any], guards: Guards) -> list[dict[str, Any]]:
    """The questions of the closest entries, offered when the bot declines: the customer may have meant one.

    Only entries with a question (title) that score at least retrieval.related_min_score, none that carry
    instructions aimed at the model, one per distinct question, at most retrieval.related_questions.
    """
    cfg = settings.retrieval
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for hit in hits:
        if len(out) >= cfg.related_questions:
            break
        question = " ".join((hit.title or "").split())[:300]
        if not question or hit.score < cfg.related_min_score or question.casefold() in seen:
            continue
        if settings.safety.enabled and guards.source_drop_verdict(hit) is not None:
            continue
        seen.add(question.casefold())
        out.append({"question": question, "source": hit.source, "entry_id": hit.entry_id, "url": hit.url})
    return out
