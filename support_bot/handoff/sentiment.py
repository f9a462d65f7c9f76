"""Sentiment and frustration scores for customer messages: VADER plus a few support-specific additions.

VADER (`vaderSentiment`) does the scoring: its lexicon, intensifiers and dampeners ("really", "slightly"), negation
("not helpful"), words in capitals, "but" clauses and "!"/"??" emphasis, squashed into -1..1. On top of it, small and
documented, sits what a support chat needs and VADER (tuned on reviews and social media, English only) lacks:

- `DOMAIN_LEXICON`, merged into VADER's lexicon: words it does not know ("unhelpful", "garbage", "late"); words it
  reads the other way round in a complaint ("joke", "unbelievable"); and milder weights for the words that describe a
  fault ("problem", "error", "broken", "died"), which nearly every support question uses without being upset;
- `NEUTRAL_WORDS`, taken out of VADER's lexicon: the words of any request ("please", "help"), and common words of
  other languages that VADER's English lexicon scores ("die" and "war" in German, "sin" in Spanish, "grave" in French);
- `PHRASES` typical of frustrated customers ("waste of time", "how many times"), which VADER, scoring single words,
  cannot see; each match is scored as one lexicon entry, so VADER's rules apply to it too;
- shouting (a message mostly in capitals: VADER only notices capitals that stand out from lower-case words) and bare
  impatience ("Hello??? Anyone???", which VADER leaves at 0 because no word carries a valence).
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any

# Valences on VADER's -4..+4 scale.
DOMAIN_LEXICON: dict[str, float] = {
    # Words VADER lacks. Anger, insults and profanity:
    "dammit": -2.5, "omfg": -2.5, "idiots": -3.0, "clown": -2.0, "clowns": -2.0, "scammers": -3.5, "rip-off": -3.0,
    "ripoff": -3.0, "argh": -2.5,
    # judgement of the service:
    "pointless": -2.5, "atrocious": -3.5, "disgraceful": -3.0, "absurd": -2.5, "rubbish": -2.5, "garbage": -3.0,
    "trash": -2.5, "unhelpful": -2.5, "nightmare": -3.0, "slow": -1.0, "late": -1.0, "issue": -0.5, "issues": -0.5,
    # threats, and things working again:
    "sue": -2.5, "lawyer": -1.5, "works": 1.0, "worked": 1.2, "quick": 1.2, "fast": 1.2,
    # Read the other way round in a complaint ("what a joke", "unbelievable, still nothing"):
    "joke": -1.5, "unbelievable": -2.0,
    # A fault described is not yet an upset customer ("my payment failed", "the battery died"):
    "problem": -0.8, "problems": -0.8, "error": -0.8, "errors": -0.8, "wrong": -1.2, "broken": -1.5, "broke": -1.5,
    "lost": -1.2, "missing": -1.2, "damaged": -1.5, "faulty": -1.5, "defective": -1.5, "fail": -1.5, "failed": -1.5,
    "fails": -1.5, "failure": -1.8, "complaint": -1.5, "died": -1.2, "dead": -1.2,
}
# No valence at all: the words of any request, and other languages' common words that VADER's lexicon scores.
NEUTRAL_WORDS: frozenset[str] = frozenset({"please", "help", "support", "hope", "die", "war", "sin", "grave"})

# Phrases scored as one unit (their words are not scored again). Regular expressions, matched case-insensitively.
PHRASES: dict[str, float] = {
    r"waste of (?:my )?time": -3.0,
    r"how many (?:more )?times": -2.5,
    r"(?:two|three|four|five|several|many|multiple|ten|\d+) times(?: now| already)?": -1.5,
    r"(?:again and again|over and over|yet again|once again)": -1.8,
    r"(?:still|again) (?:not|no|doesn't|does not|isn't|is not|hasn't|has not|haven't|have not|nothing)\b": -2.0,
    r"(?:doesn't|does not|didn't|did not|don't|do not) (?:help|work|answer|make sense)": -2.0,
    r"(?:not|never) (?:working|helping|listening|answering)": -2.0,
    r"(?:makes|made) no sense": -2.0,
    r"nothing (?:works|worked|is working|working|helps|helped)": -2.0,
    r"(?:not|isn't|wasn't|never) (?:very |at all )?(?:helpful|useful|acceptable|good enough)(?: at all)?": -2.5,
    r"(?:you|u) (?:don't|do not|dont) (?:understand|get it|listen)": -2.5,
    r"(?:are|r) (?:you|u) (?:even )?(?:listening|reading|serious|kidding|joking)": -2.5,
    r"(?:fed up|sick of|sick and tired|had enough|tired of)": -3.0,
    r"(?:is|this is|what a) (?:a )?joke": -2.5,
    r"for the last time": -2.5,
    r"(?:going|go|went|running) (?:a)?round in circles": -2.5,
    r"same (?:answer|reply|response|thing)(?: again)?": -1.8,
    r"(?:no one|nobody|no-one) (?:helps|is helping|cares|answers|listens)": -2.5,
    r"give up": -2.0,
    r"never (?:again|buying|order(?:ing)?)": -2.5,
    r"(?:thank you|thanks) (?:so much|a lot|very much)": 2.5,
}

# A matched phrase reaches VADER as one made-up word that has the phrase's valence in the lexicon.
_COMPILED_PHRASES = [
    (re.compile(rf"\b{pattern}", re.IGNORECASE), f"support_phrase_{i}", value)
    for i, (pattern, value) in enumerate(PHRASES.items())
]
# Shouting: all-caps text gets no emphasis from VADER (its capitals rule needs lower-case words to stand out from).
_SHOUT_FACTOR, _SHOUT_PENALTY = 1.3, 1.5
# Impatience: each "??" or "!!" run (up to 3) in a message whose words carry no valence.
_IMPATIENCE = 0.6
_MARKS = re.compile(r"[!?]+")

_analyzer: Any = None
_analyzer_lock = threading.Lock()


@dataclass
class Sentiment:
    """A message's score in -1..1 (negative = unhappy), the sum it squashes and the signals that made it."""

    score: float
    raw: float
    signals: list[str] = field(default_factory=list)


def _build_analyzer() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer, SentiText, normalize

    class SupportAnalyzer(SentimentIntensityAnalyzer):
        """VADER whose scores also carry each word's valence and the sum that `compound` squashes."""

        squash = staticmethod(normalize)

        def score_valence(self, sentiments: list[float], text: str) -> dict[str, Any]:
            scores = super().score_valence(sentiments, text)
            # VADER's sum: the word valences plus the "!"/"?" emphasis in the direction of their sign.
            total = float(sum(sentiments))
            if total:
                total += math.copysign(self._punctuation_emphasis(text), total)
            words = SentiText(text)
            scores["raw"] = total
            scores["words"] = list(zip(words.words_and_emoticons, sentiments))
            scores["caps_stand_out"] = words.is_cap_diff
            return scores

    built = SupportAnalyzer()  # reads VADER's lexicon files
    built.lexicon.update(DOMAIN_LEXICON)
    for word in NEUTRAL_WORDS:
        built.lexicon.pop(word, None)
    built.lexicon.update({word: value for _pattern, word, value in _COMPILED_PHRASES})
    return built


def analyzer() -> Any:
    """The shared VADER analyzer with the support additions, built on first use (any thread)."""
    global _analyzer
    if _analyzer is None:
        with _analyzer_lock:
            if _analyzer is None:
                _analyzer = _build_analyzer()
    return _analyzer


def _shouting(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    words = re.findall(r"[A-Za-z]{2,}", text)
    return len(letters) >= 10 and len(words) >= 3 and sum(c.isupper() for c in letters) / len(letters) >= 0.7


def _phrases_as_words(text: str) -> tuple[str, dict[str, list[str]]]:
    """The text with each phrase replaced by its made-up word, and the phrases each word stands for."""
    found: dict[str, list[str]] = {}
    for pattern, word, _value in _COMPILED_PHRASES:

        def replace(match: re.Match[str], word: str = word) -> str:
            found.setdefault(word, []).append(match.group(0).lower())
            # Capitals carry over (VADER's emphasis); the phrase must stay a word of its own.
            spelled = word.upper() if match.group(0).isupper() else word
            return f" {spelled}" + (" " if match.string[match.end() : match.end() + 1].isalnum() else "")

        text = pattern.sub(replace, text)
    return text, found


def score(text: str) -> Sentiment:
    """Score one message."""
    text = (text or "").replace("\u2019", "'")
    vader = analyzer()
    shouting = _shouting(text)
    # A message that shouts as a whole is scored once for it below, not again word by word by VADER.
    scored, phrases = _phrases_as_words(text.lower() if shouting else text)
    scores = vader.polarity_scores(scored)
    raw = scores["raw"]

    signals: list[str] = []
    for token, valence in scores["words"]:
        word = token.lower()
        if not valence:
            continue
        if phrases.get(word):
            signals.append(phrases[word].pop(0))
            continue
        if scores["caps_stand_out"] and token.isupper():
            signals.append(f"caps:{token}")
        # VADER flips a negated word's valence ("not good").
        signals.append(f"not {word}" if vader.lexicon.get(word, valence) * valence < 0 else word)

    bursts = [run for run in _MARKS.findall(text) if len(run) >= 2 or run == "!"]
    if raw < 0 and bursts:
        signals.append("!" * min(sum(min(len(run), 4) for run in bursts), 6))
    elif raw == 0 and any(len(run) >= 2 for run in bursts):
        # "Hello??? Anyone???": impatience even without an unhappy word.
        raw -= _IMPATIENCE * min(sum(len(run) >= 2 for run in bursts), 3)
        signals.append("repeated punctuation")
    if shouting:
        raw = raw * _SHOUT_FACTOR - _SHOUT_PENALTY if raw < 0 else raw - _SHOUT_PENALTY
        signals.append("shouting")
    return Sentiment(score=vader.squash(raw), raw=raw, signals=signals)
