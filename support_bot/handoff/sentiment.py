"""A small rule-based sentiment and frustration scorer for customer messages (no model, microseconds per message).

Words carry a valence from -4 to +4; intensifiers ("really"), dampeners ("a bit"), negation ("not helpful"), words in
capitals, "but" clauses, repeated punctuation and shouting change it; phrases typical of frustrated customers ("waste
of time", "how many times") count as a whole. The sum is squashed into -1..1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

# Valence of single words, lower-cased. Positive words matter too: "thanks, that's great" must not read as angry, and
# "not great" must read as mildly negative.
LEXICON: dict[str, float] = {
    # anger, insults and profanity
    "angry": -2.5, "furious": -3.5, "livid": -3.5, "outraged": -3.5, "mad": -2.0, "hate": -3.0, "hating": -3.0,
    "damn": -2.0, "dammit": -2.5, "crap": -2.5, "crappy": -2.5, "shit": -3.0, "shitty": -3.0, "fuck": -3.5,
    "fucking": -3.5, "fucked": -3.5, "bullshit": -3.5, "wtf": -3.0, "ffs": -3.0, "omfg": -2.5, "stupid": -2.5,
    "idiot": -3.0, "idiots": -3.0, "idiotic": -3.0, "moron": -3.0, "dumb": -2.5, "pathetic": -3.0, "clown": -2.0,
    "clowns": -2.0, "liar": -3.0, "liars": -3.0, "lying": -2.5, "scam": -3.0, "scammers": -3.5, "fraud": -3.0,
    "thieves": -3.0, "rip-off": -3.0, "ripoff": -3.0,
    # judgement of the service
    "useless": -3.0, "worthless": -3.0, "pointless": -2.5, "hopeless": -2.5, "incompetent": -3.0, "terrible": -3.0,
    "awful": -3.0, "horrible": -3.0, "horrendous": -3.5, "atrocious": -3.5, "dreadful": -3.0, "worst": -3.5,
    "disgrace": -3.0, "disgraceful": -3.0, "shameful": -3.0, "unacceptable": -3.0, "ridiculous": -2.5,
    "absurd": -2.5, "insane": -2.0, "nonsense": -2.5, "rubbish": -2.5, "garbage": -3.0, "trash": -2.5,
    "sucks": -3.0, "suck": -2.5, "bad": -2.0, "poor": -1.8, "disappointing": -2.2, "disappointed": -2.2,
    "dissatisfied": -2.2, "unhappy": -2.2, "unhelpful": -2.5, "misleading": -2.0, "wrong": -1.2, "broken": -1.5,
    "slow": -1.0, "late": -1.0, "delayed": -1.2, "lost": -1.2, "missing": -1.2, "damaged": -1.5, "faulty": -1.5,
    "defective": -1.5, "problem": -0.8, "problems": -0.8, "issue": -0.5, "issues": -0.5, "error": -0.8,
    "fail": -1.5, "failed": -1.5, "fails": -1.5, "failure": -1.8, "complaint": -1.5, "complain": -1.5,
    "nightmare": -3.0, "joke": -1.5, "mess": -2.0, "disaster": -3.0,
    # the customer's own state
    "frustrated": -2.5, "frustrating": -2.5, "frustration": -2.5, "annoyed": -2.0, "annoying": -2.0,
    "irritated": -2.0, "irritating": -2.0, "upset": -2.0, "sick": -1.0, "tired": -1.0, "stressed": -1.8,
    "worried": -1.2, "confused": -1.0, "desperate": -2.5, "exhausted": -1.8, "ugh": -2.0, "argh": -2.5,
    "seriously": -0.8, "unbelievable": -2.0, "sue": -2.5, "lawyer": -1.5, "cancel": -1.0,
    # positive
    "thanks": 1.5, "thank": 1.5, "thx": 1.2, "great": 2.5, "good": 1.8, "excellent": 3.0, "perfect": 3.0,
    "awesome": 3.0, "amazing": 3.0, "fantastic": 3.0, "wonderful": 3.0, "brilliant": 3.0, "superb": 3.0,
    "love": 3.0, "lovely": 2.5, "nice": 1.8, "happy": 2.0, "glad": 2.0, "pleased": 2.0, "appreciate": 2.0,
    "appreciated": 2.0, "helpful": 2.0, "fine": 0.8, "ok": 0.3, "okay": 0.3, "cool": 1.3, "solved": 2.0,
    "resolved": 1.8, "works": 1.0, "worked": 1.2, "easy": 1.5, "quick": 1.2, "fast": 1.2,
}

# Phrases counted as one unit (their words are not scored again). Written as regular expressions over the
# lower-cased text.
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

_INTENSIFIERS: dict[str, float] = {
    "very": 0.3, "really": 0.3, "so": 0.3, "extremely": 0.5, "totally": 0.4, "absolutely": 0.4, "completely": 0.4,
    "utterly": 0.5, "incredibly": 0.5, "super": 0.3, "too": 0.2, "such": 0.3, "most": 0.3, "fucking": 0.5,
    "bloody": 0.4, "damn": 0.3, "freaking": 0.4, "beyond": 0.4,
}
_DAMPENERS: dict[str, float] = {"slightly": 0.5, "bit": 0.6, "somewhat": 0.6, "little": 0.6, "kinda": 0.6, "fairly": 0.8}
_NEGATIONS = frozenset(
    {
        "not", "no", "never", "nothing", "nobody", "none", "neither", "nor", "hardly", "isn't", "isnt", "aren't",
        "arent", "wasn't", "wasnt", "weren't", "don't", "dont", "doesn't", "doesnt", "didn't", "didnt", "can't",
        "cant", "cannot", "won't", "wont", "wouldn't", "shouldn't", "haven't", "hasn't", "ain't", "without",
    }
)
# Squashing constant: a single strongly negative word ("useless", -3) lands near -0.56, two of them near -0.8.
_ALPHA = 20.0
_CAPS_FACTOR = 1.5
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|[!?]+")
_COMPILED_PHRASES = [(re.compile(rf"\b{p}"), v) for p, v in PHRASES.items()]


@dataclass
class Sentiment:
    """A message's score in -1..1 (negative = unhappy) and the signals that made it."""

    score: float
    raw: float
    signals: list[str] = field(default_factory=list)


def _shouting(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    words = re.findall(r"[A-Za-z]{2,}", text)
    return len(letters) >= 10 and len(words) >= 3 and sum(c.isupper() for c in letters) / len(letters) >= 0.7


def score(text: str) -> Sentiment:
    """Score one message."""
    text = (text or "").replace("\u2019", "'")
    signals: list[str] = []
    lowered = text.lower()

    # Phrases first; their span is blanked so their words are not counted twice.
    raw = 0.0
    for pattern, value in _COMPILED_PHRASES:
        for match in pattern.finditer(lowered):
            raw += value
            signals.append(match.group(0))
            lowered = lowered[: match.start()] + " " * (match.end() - match.start()) + lowered[match.end() :]
    # Tokens of the blanked text, keeping the original casing for the capitals check.
    tokens: list[tuple[str, str]] = []
    for match in _WORD.finditer(lowered):
        tokens.append((match.group(0), text[match.start() : match.end()]))

    shouting = _shouting(text)
    mixed_case = not shouting and any(c.islower() for c in text)
    parts: list[float] = []
    but_at = None
    for i, (word, original) in enumerate(tokens):
        if word in ("but", "however", "although"):
            but_at = len(parts)
            continue
        value = LEXICON.get(word)
        if value is None:
            continue
        factor = 1.0
        for prev, _orig in tokens[max(0, i - 2) : i]:
            factor += _INTENSIFIERS.get(prev, 0.0)
            factor *= _DAMPENERS.get(prev, 1.0)
        if mixed_case and original.isupper() and len(original) > 1:
            factor *= _CAPS_FACTOR
            signals.append(f"caps:{original}")
        value *= factor
        if any(prev in _NEGATIONS for prev, _orig in tokens[max(0, i - 3) : i]):
            # "not good" is bad, "not bad" is only mildly good.
            value *= -0.5 if value > 0 else -0.4
            signals.append(f"not {word}")
        else:
            signals.append(word)
        parts.append(value)
    if but_at is not None:
        # What follows "but" is what the customer means.
        parts = [v * 0.5 for v in parts[:but_at]] + [v * 1.5 for v in parts[but_at:]]
    raw += sum(parts)

    bursts = [t for t, _o in tokens if t[0] in "!?" and (len(t) >= 2 or t == "!")]
    marks = sum(min(len(t), 4) for t in bursts if t[0] in "!?")
    repeated = [t for t in bursts if len(t) >= 2]
    if raw < 0 and marks:
        raw *= 1 + 0.1 * min(marks, 6)
        signals.append("!" * min(marks, 6))
    elif raw <= 0 and repeated:
        # "Hello??? Anyone???": impatience even without an unhappy word.
        raw -= 0.6 * min(len(repeated), 3)
        signals.append("repeated punctuation")
    if shouting:
        raw = raw * 1.3 - 1.5 if raw < 0 else raw - 1.5
        signals.append("shouting")
    return Sentiment(score=raw / math.sqrt(raw * raw + _ALPHA), raw=raw, signals=signals)
