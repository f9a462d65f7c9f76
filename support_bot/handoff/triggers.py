"""When a chat goes to a person: requests for a person (in several languages), frustration, the bot's abstentions,
safety policies and model failures, each a Trigger with a reason code and a queue priority.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from support_bot.core.config import Settings
from support_bot.handoff.sentiment import score as sentiment_score

REASONS = ("request", "button", "abstain", "sentiment", "safety", "max_turns", "offline", "model")
REASON_LABELS = {
    "request": "Customer asked for a person",
    "button": "Customer pressed the talk-to-a-person button",
    "abstain": "The bot could not answer several times in a row",
    "sentiment": "Customer seems upset or frustrated",
    "safety": "A safety policy asked for a person",
    "max_turns": "Many bot answers without a resolution",
    "offline": "Message left while no agent was online",
    "model": "The bot's model failed or timed out while answering",
}
MAX_DETAIL_CHARS = 500


# --- asking for a person -----------------------------------------------------------------------------------------

_DET = r"(?:(?:a|an|the|some|any|one of your|one of the|your|a member of your|a member of the|someone from your)\s+)?"
_ADJ = (
    r"(?:(?:real|live|actual|human|living|proper|flesh and blood|customer|support|service|sales|technical|tech|"
    r"customer service|customer support)\s+)*"
)
_ANY_PERSON = (
    r"(?:human beings?|humans?|person|people|agents?|representatives?|reps?|operators?|staff(?: member)?|employees?|"
    r"team members?|team|supervisors?|managers?|consultants?|advisers?|advisors?|associates?|someone|somebody|"
    r"anyone|anybody|customer service|customer support|support team|service desk|help ?desk)"
)
# What "I want / need / can I get ..." must be followed by: no bare "someone" or "person", which too often mean
# someone else ("I need someone to sign for the parcel").
_STRONG_PERSON = (
    r"(?:human beings?|humans?|(?:real|live|actual|human|living) (?:person|people|one)|agents?|representatives?|"
    r"reps?|operators?|supervisors?|managers?|staff member)"
)
# What may follow the person word, so that "I want the agent discount" is not a request.
_AFTER = (
    r"(?=\s*(?:$|[.,!?;:)]|(?:please|pls|plz|now|asap|right|immediately|instead|to|who|that|about|on|here|there|"
    r"for|and|or|because|regarding|i|rather|thanks?|from|at|in|with|today|directly|quickly|again|already|"
    r"available|online)\b))"
)
_PATTERNS_BY_LANGUAGE: dict[str, list[str]] = {
    "en": [
        rf"\b(?:talk|speak|chat|communicate|converse)(?:ing)?\s+(?:directly\s+)?(?:to|with)\s+{_DET}{_ADJ}{_ANY_PERSON}{_AFTER}",
        r"\b(?:connect|transfer|put|pass|forward|hand|route|escalate|switch|redirect|send)"
        r"(?:\s+(?:me|us|this|this chat|this conversation|my case|my call|it|my issue|my request|this issue))?"
        rf"(?:\s+(?:through|over|on|back))?\s+(?:to|with)\s+{_DET}{_ADJ}{_ANY_PERSON}{_AFTER}",
        rf"\bget\s+through\s+to\s+{_DET}{_ADJ}{_ANY_PERSON}{_AFTER}",
        rf"\b(?:want|need|like|request|prefer|get|give me|demand|require|wanna|have|looking for)\s+{_DET}{_ADJ}"
        rf"{_STRONG_PERSON}{_AFTER}",
        r"\b(?:is|are)\s+there\s+(?:a|an|any|some|one)?\s*(?:real\s+|live\s+|actual\s+)?"
        r"(?:humans?|person|people|agents?|representatives?|operators?|one)"
        r"(?=\s*(?:$|[.,!?]|i can\b|i could\b|i may\b|to (?:talk|speak|chat)\b|available\b|online\b|here\b|there\b|"
        r"around\b|who\b|that\b|working\b))",
        r"\b(?:don't want|do not want|dont want|stop|enough of|tired of|sick of|fed up with|done with|no more|not)\s+"
        r"(?:talking to |chatting with |speaking (?:to|with) |to talk to |to chat with |with )?"
        r"(?:a|an|the|this|your|you)?\s*(?:stupid |dumb |useless |damn |automated )?"
        r"(?:bot|robot|chatbot|machine|ai|computer|automated (?:system|assistant|replies|reply))s?"
        r"(?=\s*(?:$|[.,!?;:]|please\b|pls\b|i want\b|give\b|let\b|anymore\b|any more\b|i need\b))",
    ],
    "de": [
        r"\b(?:mit\s+)?(?:einem|einer|einen|ihrem|ihrer|dem|der|den)\s+(?:echten\s+|richtigen\s+|menschlichen\s+|"
        r"lebenden\s+|realen\s+)?(?:menschen|mitarbeiter(?:in)?|person|berater(?:in)?|ansprechpartner(?:in)?|"
        r"kundendienst|kundenservice|support|agenten|operator|vorgesetzten)\s+(?:sprechen|reden|verbinden|chatten)\b",
        r"\bmit\s+jemandem\s+(?:sprechen|reden|chatten)\b",
        r"\b(?:verbinden sie mich|verbinde mich|bitte verbinden)\s+mit\b",
        r"\bich\s+(?:will|mochte|brauche|hatte gern|hatte gerne|mochte gerne)\s+(?:einen|eine|ein)\s+"
        r"(?:echten\s+|richtigen\s+)?(?:menschen|mitarbeiter(?:in)?|berater(?:in)?|ansprechpartner(?:in)?)\b",
        r"\b(?:echter mensch|echten menschen|menschlichen mitarbeiter|menschlichen ansprechpartner)\b",
    ],
    "fr": [
        r"\bparler\s+(?:a|avec)\s+(?:(?:un|une|le|la|l')\s*)?(?:vrai\s+|vraie\s+|veritable\s+)?"
        r"(?:humain|etre humain|personne|conseiller|conseillere|agent|operateur|operatrice|quelqu'un|quelqu un|"
        r"responsable|service client)\b",
        r"\b(?:je veux|je voudrais|j'aimerais|je souhaite|je souhaiterais)\s+(?:un|une)\s+(?:vrai\s+|vraie\s+)?"
        r"(?:humain|conseiller|conseillere|agent|operateur|operatrice|personne reelle|vraie personne)\b",
        r"\b(?:mettez[- ]moi|mets[- ]moi|me mettre)\s+en\s+(?:relation|contact)\s+avec\b",
    ],
    "es": [
        r"\bhablar\s+con\s+(?:(?:un|una|el|la)\s+)?(?:alguien|humano|persona|agente|asesor|asesora|operador|"
        r"operadora|representante|ser humano|encargado|supervisor)\b",
        r"\b(?:quiero|necesito|quisiera|me gustaria)\s+(?:un|una)\s+(?:humano|agente|asesor|asesora|operador|"
        r"operadora|representante|persona real)\b",
    ],
    "it": [
        r"\bparlare\s+con\s+(?:(?:un|una|il|la|l')\s*)?(?:qualcuno|umano|persona|operatore|operatrice|agente|"
        r"consulente|essere umano|responsabile)\b",
        r"\b(?:voglio|vorrei)\s+(?:un|una)\s+(?:operatore|operatrice|umano|agente|consulente|persona reale|"
        r"persona vera)\b",
    ],
    "nl": [
        r"\b(?:met\s+)?(?:een|de)\s+(?:echte\s+|echt\s+)?(?:mens|medewerker|persoon|klantenservice|agent)\s+"
        r"(?:spreken|praten|chatten)\b",
        r"\bmet\s+iemand\s+(?:spreken|praten|chatten)\b",
        r"\bik\s+wil\s+(?:graag\s+)?een\s+(?:echte\s+|echt\s+)?(?:mens|medewerker)\b",
    ],
    "pt": [
        r"\bfalar\s+com\s+(?:(?:um|uma|o|a)\s+)?(?:alguem|humano|pessoa|atendente|agente|operador|operadora|"
        r"representante|ser humano|consultor|supervisor)\b",
        r"\b(?:quero|preciso de|gostaria de)\s+(?:um|uma)\s+(?:atendente|humano|agente|operador|pessoa real)\b",
        r"\batendente humano\b",
    ],
}
# A message that is nothing but a request ("HUMAN!!!", "agent please", "real person now").
_SHORT_REQUESTS = frozenset(
    {
        "human", "humans", "a human", "human being", "agent", "an agent", "live agent", "operator", "representative",
        "rep", "person", "a person", "real person", "a real person", "live person", "customer service",
        "customer support", "support agent", "someone real", "manager", "supervisor", "staff", "mensch",
        "mitarbeiter", "humain", "conseiller", "humano", "agente", "operatore", "medewerker", "atendente",
    }
)
_FILLERS = frozenset(
    {
        "please", "pls", "plz", "now", "asap", "immediately", "hello", "hi", "hey", "just", "ok", "okay", "i",
        "me", "want", "need", "give", "get", "can", "could", "may", "have", "talk", "speak", "to", "with", "bitte",
        "svp", "por", "favor", "per", "favore", "alstublieft", "graag",
    }
)
# Words that, just before a match, turn it around ("I don't need to talk to a person").
_NEGATION = re.compile(
    r"\b(?:don't|dont|do not|doesn't|does not|didn't|no need|never|without|not|rather not|won't|will not)"
    r"(?:\s+\S+){0,2}\s*$"
)


def normalize(text: str) -> str:
    """Lower-case, accents and curly quotes removed, spaces collapsed: what the request patterns are written for."""
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.replace("\u2019", "'").replace("`", "'").lower()
    return re.sub(r"\s+", " ", text).strip()


def _compiled(settings: Settings) -> list[re.Pattern[str]]:
    key = (tuple(settings.handoff.request_languages), tuple(settings.handoff.request_phrases))
    cached = _pattern_cache.get(key)
    if cached is None:
        sources = [p for lang in key[0] for p in _PATTERNS_BY_LANGUAGE.get(lang, [])]
        sources += [rf"\b{re.escape(normalize(phrase))}\b" for phrase in key[1] if phrase.strip()]
        cached = [re.compile(p) for p in sources]
        _pattern_cache[key] = cached
    return cached


_pattern_cache: dict[tuple, list[re.Pattern[str]]] = {}


def asks_for_person(text: str, settings: Settings) -> str | None:
    """The words in which the customer asks for a person, or None when they don't."""
    norm = normalize(text)
    if not norm:
        return None
    words = re.findall(r"[a-z']+", norm)
    rest = " ".join(w for w in words if w not in _FILLERS)
    if len(words) <= 6 and rest in _SHORT_REQUESTS:
        return norm[:MAX_DETAIL_CHARS]
    for pattern in _compiled(settings):
        for match in pattern.finditer(norm):
            if not _NEGATION.search(norm[: match.start()]):
                return match.group(0).strip()
    return None


# --- triggers ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """Why a chat goes to a person: a reason code (REASONS) and the evidence."""

    reason: str
    detail: str = ""


def frustration(text: str, previous: list[str], settings: Settings) -> str | None:
    """The evidence when the customer is upset enough for a person, else None."""
    cfg = settings.handoff
    current = sentiment_score(text)
    evidence = f"sentiment {current.score:+.2f} ({', '.join(current.signals[:6])})"
    if current.score <= -cfg.sentiment_threshold:
        return evidence
    if cfg.sentiment_window > 1 and len(previous) >= cfg.sentiment_window - 1:
        recent = [sentiment_score(t).score for t in previous[-(cfg.sentiment_window - 1) :]] + [current.score]
        if all(s <= -cfg.sentiment_threshold / 2 for s in recent):
            return f"{evidence}; {len(recent)} unhappy messages in a row"
    return None


def message_trigger(
    settings: Settings, *, text: str, previous_customer_texts: list[str], bot_turns: int
) -> Trigger | None:
    """The trigger a new customer message fires before the bot answers: asks for a person, upset, too many turns."""
    cfg = settings.handoff
    if cfg.request_enabled:
        asked = asks_for_person(text, settings)
        if asked:
            return Trigger("request", asked)
    if cfg.sentiment_enabled:
        upset = frustration(text, previous_customer_texts, settings)
        if upset:
            return Trigger("sentiment", upset)
    if cfg.max_turns_enabled and bot_turns >= cfg.max_bot_turns:
        return Trigger("max_turns", f"{bot_turns} bot answers without a resolution")
    return None


def abstain_trigger(settings: Settings, *, abstain_streak: int) -> Trigger | None:
    """The trigger when the bot is about to abstain once more after `abstain_streak` abstentions in a row."""
    cfg = settings.handoff
    if cfg.abstain_enabled and abstain_streak + 1 >= cfg.abstain_streak:
        return Trigger("abstain", f"{abstain_streak + 1} questions in a row without an answer")
    return None


def safety_trigger(settings: Settings, *, category: str) -> Trigger | None:
    return Trigger("safety", category) if settings.handoff.safety_enabled else None


def model_failure_trigger(settings: Settings, *, detail: str) -> Trigger | None:
    """The trigger when the model failed or timed out mid-answer (None: only apologise and offer a person)."""
    return Trigger("model", detail[:MAX_DETAIL_CHARS]) if settings.handoff.model_failure_enabled else None


def priority_for(settings: Settings, reason: str, detail: str = "") -> int:
    rules = settings.handoff.priority
    return rules.get(f"{reason}:{detail}", rules.get(reason, 0))
