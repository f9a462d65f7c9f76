"""From one customer's chat to an entry for everyone: greetings, sign-offs, apologies and names leave a suggested FAQ
entry, and case-specific identifiers (order, ticket and tracking numbers...) become a neutral placeholder, as personal
data already does (safety.pii). What may still be specific to one case is flagged for ops to review.

Names are those known from the conversation: the agents who wrote in it (their display and user names), whoever
introduces themselves ("I'm Dana", "my name is Sam Jones", "Dana here") and whoever is greeted or thanked by name
("Hi Sam,", "Thanks, Dana!").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from support_bot.safety.pii import PLACEHOLDERS

NAME_PLACEHOLDER = "[NAME]"
NUMBER_PLACEHOLDER = "[NUMBER]"

# Pleasantries that carry no problem or resolution: greetings, thanks, apologies, sign-offs, offers of more help.
PLEASANTRIES = re.compile(
    r"\b(?:hi|hello|hey|hiya|good (?:morning|afternoon|evening)|greetings|dear|"
    r"thanks?(?: you)?(?: (?:so|very) much)?(?: for (?:contacting|reaching out|getting in touch|chatting|your patience|"
    r"waiting)(?: (?:to|with))?(?: \w+)?(?: support)?)?|thx|ty|many thanks|much appreciated|cheers|ok(?:ay)?|"
    r"great|perfect|awesome|cool|"
    r"(?:i[’']?m |i am |we[’']?re |we are )?(?:so |very |really )?sorry(?: about that| for (?:the|any|this) (?:trouble|inconvenience|wait|delay|confusion))?|"
    r"(?:my|our) apologies|apologies for (?:the|any|this) (?:trouble|inconvenience|wait|delay|confusion)|"
    r"(?:best |kind |warm |many )?regards|sincerely|best wishes|all the best|"
    r"(?:good)?bye|see you|take care|have a (?:great|nice|good|lovely) (?:day|one|evening|weekend)|"
    r"you'?re welcome|no problem|no worries|my pleasure|glad (?:i|we) could help|happy to help|"
    r"(?:is there )?anything else(?: i can (?:help|do)(?: you)?(?: with)?)?(?: today)?|"
    r"how (?:can|may) i (?:help|assist)(?: you)?(?: today)?|what can i do for you(?: today)?|"
    r"my name is|this is|i[’']?m|i am|you are|speaking|here|from|support|team|that'?s all|that is all|all good|"
    r"it works(?: now)?|that worked|that did it|solved|fixed)\b",
    re.IGNORECASE,
)
WORD = re.compile(r"[^\W_]+")

# Capitalized words that follow "I'm" or "Hi" without being a name.
_NOT_NAMES = frozenset(
    {
        "a", "able", "about", "admin", "afraid", "agent", "all", "also", "an", "and", "assistant", "at", "away", "back",
        "bot", "busy", "checking", "confused", "currently", "customer", "customers", "dear", "done", "everyone", "fine",
        "folks", "from", "getting", "glad", "going", "good", "great", "guys", "happy", "having", "here", "hey", "hi",
        "i", "in", "interested", "just", "looking", "not", "now", "ok", "okay", "on", "ops", "our", "ready", "really",
        "so", "sorry", "still", "support", "sure", "team", "thanks", "the", "there", "trying", "unable", "very",
        "waiting", "well", "with", "working", "writing", "you", "your"
    }
)
_NAME_WORD = r"[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+(?:[-'][A-ZÀ-ÖØ-Þ]?[a-zß-öø-ÿ]+)?"
_NAME = rf"{_NAME_WORD}(?: {_NAME_WORD})?"
# Where the conversation says whose name a word is.
_NAME_CUES = (
    re.compile(rf"(?i:\b(?:my name is|i[’']?m|i am|call me)) ({_NAME})"),
    re.compile(rf"(?:^|[.!?]\s+)(?i:this is) ({_NAME})(?=\s*(?:[,.!?]|$|(?i:from|here|with|and)\b))", re.MULTILINE),
    re.compile(rf"(?:^|[.!?]\s+)({_NAME}) here\b", re.MULTILINE),
    re.compile(
        rf"(?i:\b(?:hi|hello|hey|hiya|dear|good (?:morning|afternoon|evening)|thanks|thank you|thx|cheers|bye|"
        rf"goodbye|regards|best|sincerely))\s*,?\s+({_NAME})(?=\s*(?:[,.!?:]|$))",
        re.MULTILINE,
    ),
    re.compile(rf"^\s*(?:-|–|—)\s*({_NAME})\s*$", re.MULTILINE),
)

# A number that belongs to one case: the word saying what it is, then the number (with a digit in it).
_ID_WORDS = (
    r"order|ticket|tracking|case|reference|ref|invoice|account|acct|booking|confirmation|reservation|customer|member|"
    r"membership|parcel|package|shipment|consignment|return|rma|claim|transaction|serial|policy|subscription|"
    r"contract|quote|receipt"
)
_LABELLED_ID = re.compile(
    rf"(?P<lead>\b(?:{_ID_WORDS})(?:\s+(?:number|no\.?|num|nr|id|code))?(?:\s*(?:is|was|:|=))?)\s*(?:#\s*)?"
    r"(?P<id>(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{3,})(?![\w@])",
    re.IGNORECASE,
)
_HASH_ID = re.compile(r"(?<![\w&])#\s?\d{3,}\b")
# What still looks like one case's identifier after that: long digit runs, codes mixing letters and digits.
_TOKEN = re.compile(r"(?<![\w\[#])[A-Za-z0-9][A-Za-z0-9-]*(?![\w\]])")


def _looks_like_identifier(token: str) -> bool:
    digits = sum(c.isdigit() for c in token)
    return digits >= 5 or (digits >= 3 and any(c.isalpha() for c in token))


_PLACEHOLDER = re.compile(
    r"\[(?:" + "|".join(re.escape(p.strip("[]")) for p in (*PLACEHOLDERS.values(), NAME_PLACEHOLDER,
                                                          NUMBER_PLACEHOLDER)) + r")\]"
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# "from the support team" after a self-introduction.
_TEAM = (
    r"(?:\s+(?i:from|with|at|of|on)\s+(?:the\s+)?(?:[\w&'-]+\s+){0,3}"
    r"(?i:team|support|department|desk|service|care)\b)?"
)
_GREETING = (
    r"(?i:hi|hello|hey|hiya|dear|greetings|good (?:morning|afternoon|evening))"
    r"(?:\s+(?i:there|all|again|team|everyone|folks|friend|customer|sir(?: or madam)?|madam))?"
)


@dataclass
class Names:
    """The people a conversation names, longest first so "Dana Scully" goes before "Dana"."""

    known: set[str] = field(default_factory=set)

    def add(self, name: str) -> None:
        name = " ".join(name.split())
        words = name.split(" ")
        if not name or all(w.lower() in _NOT_NAMES for w in words):
            return
        self.known.add(name)
        for word in words:
            if len(word) > 1 and word.lower() not in _NOT_NAMES and re.fullmatch(_NAME_WORD, word):
                self.known.add(word)

    def pattern(self) -> str | None:
        if not self.known:
            return None
        ordered = sorted(self.known, key=lambda n: (-len(n), n))
        return "(?:" + "|".join(re.escape(n) for n in ordered) + ")"


def known_names(texts: Iterable[str], people: Iterable[str] = ()) -> Names:
    """The names in a conversation: `people` (agents' display and user names) and those the texts introduce or greet."""
    names = Names()
    for person in people:
        person = (person or "").strip()
        if "@" in person or not person:
            continue
        # A user name like "dscully" stands for "Dscully" in text; a display name as written.
        names.add(person if any(c.isupper() for c in person) else person.title())
    for text in texts:
        for cue in _NAME_CUES:
            for m in cue.finditer(text):
                names.add(m.group(1))
    return names


def replace_identifiers(text: str) -> str:
    """Order, ticket, tracking (and like) numbers -> [NUMBER], the word before them kept."""

    text = _LABELLED_ID.sub(lambda m: f"{m.group('lead')} {NUMBER_PLACEHOLDER}", text)
    return _HASH_ID.sub(NUMBER_PLACEHOLDER, text)


def _says_something(sentence: str) -> bool:
    rest = PLEASANTRIES.sub(" ", _PLACEHOLDER.sub(" ", sentence))
    return bool(WORD.search(rest))


def _sentence(sentence: str, name: str | None) -> str:
    """One sentence less its greeting, self-introduction, vocatives and names; empty when nothing else is left."""
    before = sentence
    addressed = rf"(?:\s*,?\s*{name}\b)?" if name else ""
    sentence = re.sub(rf"^{_GREETING}\b{addressed}\s*[,!.:;–—-]*\s*", "", sentence)
    if name:
        intro = rf"(?:(?i:my name is|i[’']?m|i am|this is)\s+{name}\b{_TEAM}|^{name}\s+(?i:here)\b{_TEAM})"
        sentence = re.sub(rf"{intro}\s*(?:(?:[,;:!–—-]+|\.)\s*)?(?:(?i:and)\s+)?", "", sentence)
        sentence = re.sub(rf"^{name}\s*[,!:–—-]+\s*", "", sentence)
        sentence = re.sub(rf"\s*,\s*{name}(?=\s*[.!?]*$)", "", sentence)
        sentence = re.sub(rf"(?<![\w\[]){name}(?![\w\]])", NAME_PLACEHOLDER, sentence)
    sentence = sentence.strip(" \t,;:–—-")
    if not _says_something(sentence):
        return ""
    if sentence != before and sentence[:1].islower():
        sentence = sentence[0].upper() + sentence[1:]
    return sentence


def generalize(text: str, names: Names) -> str:
    """A chat message as an FAQ text: sentences of pleasantries dropped, names and case numbers replaced."""
    name = names.pattern()
    lines = []
    for line in replace_identifiers(text).splitlines():
        kept = [s for s in (_sentence(part, name) for part in _SENTENCE_END.split(line.strip())) if s]
        if kept:
            lines.append(" ".join(kept))
    return "\n".join(lines)


def review_flags(question: str, answer: str) -> list[dict[str, str]]:
    """What in a suggestion may still be specific to one case: placeholders to reword, identifiers left behind."""
    flags: list[dict[str, str]] = []
    for what, text in (("question", question or ""), ("answer", answer or "")):
        seen: set[str] = set()
        for m in _PLACEHOLDER.finditer(text):
            if m.group() not in seen:
                seen.add(m.group())
                flags.append({
                    "field": what, "kind": "placeholder", "text": m.group(),
                    "message": f"The {what} holds the placeholder {m.group()}: reword it for every customer.",
                })
        for m in _TOKEN.finditer(text):
            if _looks_like_identifier(m.group()) and m.group() not in seen:
                seen.add(m.group())
                flags.append({
                    "field": what, "kind": "identifier", "text": m.group(),
                    "message": f"The {what} holds {m.group()}, which may belong to one customer's case.",
                })
    return flags
