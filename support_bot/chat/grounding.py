"""The grounding rules: is a sentence of a generated answer supported by one of its sources (numbers verbatim, no
word brought in from elsewhere)? verify.py applies them as the answer streams."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from support_bot.llm.prompt import CITATION_RE

_WORD_RE = re.compile(r"[a-z0-9]+(?:[.,:][0-9]+)*")
# Sentence ends are punctuation followed by space (so "$14.95" stays whole) and line breaks.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s+|$)|\n+")
# A number with its unit sign, and ranges such as "3 to 5" or "2-3": a claim is only as good as its figures.
_NUMERIC_RE = re.compile(
    r"[$€£]?\d[\d,]*(?:\.\d+)?(?:%| [ap]m\b)?(?:\s*(?:to|-|–|or|and)\s*[$€£]?\d[\d,]*(?:\.\d+)?(?:%| [ap]m\b)?)*",
    re.IGNORECASE,
)
# Times of day written one way: "9am", "9 a.m." and "9 AM" all read "9 am", so "until 9 pm" is checked as a time and
# not as a bare "9" that the source has elsewhere ("from 9 am to 8 pm").
_CLOCK_RE = re.compile(r"(\d)\s*([ap])\.?m\b\.?", re.IGNORECASE)


def _clock(text: str) -> str:
    return _CLOCK_RE.sub(lambda m: f"{m.group(1)} {m.group(2).lower()}m", text)
_STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in is it its me my no not of on or our "
    "so that the their there these this to us was we what when where which who will with you your also please "
    "any all just very more some".split()
)


# A line such as "[4] Which payment methods do you accept?": the model has started re-listing the prompt's numbered
# sources (a small model's habit once it has answered) instead of answering.
_SOURCE_ECHO_RE = re.compile(r"(?m)^[ \t]*\[\d{1,2}\][ \t]+[^\n]*\?[ \t]*$")


def source_echo_start(text: str) -> int | None:
    """Where the model began re-listing its numbered sources, if it did; what follows is not an answer."""
    m = _SOURCE_ECHO_RE.search(text)
    return m.start() if m else None


def repetition_start(text: str, *, min_words: int = 4) -> int | None:
    """Where the model began saying a finished sentence of at least `min_words` words a second time, if it did: a
    small model that has run out of answer loops until its token limit, and nothing after that point is new."""
    seen: set[str] = set()
    start = 0
    # A sentence ending the text so far counts as finished: generation stops as soon as a repeat is complete.
    for end in _SENTENCE_END.finditer(text):
        key = " ".join(_WORD_RE.findall(CITATION_RE.sub("", text[start : end.start()]).lower()))
        if len(key.split()) >= min_words:
            if key in seen:
                return start
            seen.add(key)
        start = end.end()
    return None


def _stem(word: str) -> str:
    # Plural and third-person "s" only: enough to match "items"/"item", "takes"/"take".
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def content_words(text: str) -> list[str]:
    return [_stem(w) for w in _WORD_RE.findall(text.lower()) if w not in _STOPWORDS and len(w) > 1]


def numeric_phrases(text: str) -> list[str]:
    return [re.sub(r"\s+", " ", m.group(0).strip().lower()) for m in _NUMERIC_RE.finditer(_clock(text))]


# Words that turn a claim around. A sentence and the source sentence it rests on must agree on it: "The vaccine does
# not stop the spread" has every content word of "Vaccines reduce the spread of covid significantly" but says the
# opposite, and content words alone cannot tell them apart.
_NEGATION_RE = re.compile(
    r"\b(?:not|no|never|cannot|none|nor|neither|nobody|nothing|nowhere)\b|n['\u2019]t\b", re.IGNORECASE
)


def negated(text: str) -> bool:
    return _NEGATION_RE.search(text) is not None


# Words that limit a claim: dropping one overstates it ("Serious side effects are very rare" -> "Side effects are very
# rare"; "Most orders ship within 2 days" -> "Orders ship within 2 days").
_HEDGES = frozenset(
    "serious severe mild moderate rare rarely some many most few may might usually often sometimes generally "
    "typically likely unlikely almost nearly approximately".split()
)


def hedges(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD_RE.findall(text.lower()) if w in _HEDGES)


@dataclass(frozen=True)
class Statement:
    """One sentence of a source, as the checks compare it with a generated sentence."""

    words: frozenset[str]
    negated: bool
    hedges: frozenset[str]


def claims(source: str) -> list[Statement]:
    """The source's statements: its sentences, less questions (a question asserts nothing)."""
    out = []
    for sentence in split_sentences(source):
        if sentence.rstrip().endswith("?"):
            continue
        words = frozenset(content_words(sentence))
        if words:
            out.append(Statement(words, negated(sentence), hedges(sentence)))
    return out


def _closest(words: set[str], statements: list[Statement]) -> list[Statement]:
    """The statements sharing the most of `words` (a sentence's content words); none when none shares any."""
    best = max((len(words & s.words) for s in statements), default=0)
    return [s for s in statements if best and len(words & s.words) == best]


def polarity_conflict(sentence: str, closest: list[Statement]) -> bool:
    """True when the source statements closest to `sentence` all say the opposite: the sentence negates what they
    affirm, or affirms what they negate. No shared word: nothing to compare."""
    return bool(closest) and negated(sentence) not in {s.negated for s in closest}


def transplants(words: list[str], closest: list[Statement], statements: list[Statement]) -> bool:
    """True when a word the source lacks is a variant of a word from another of its statements than the one the
    sentence rests on: "Expressed shipping takes 3 to 5 business days" is the standard-shipping statement with
    "express" moved in from the next one, and only the one unknown word in eight."""
    if not closest:
        return False
    near = {w[:5] for s in closest for w in s.words}
    elsewhere = {w[:5] for s in statements for w in s.words if len(w) >= 5} - near
    known = set().union(*(s.words for s in statements))
    return any(len(w) >= 5 and w not in known and w[:5] in elsewhere for w in words)


def overstates(sentence: str, closest: list[Statement]) -> bool:
    """True when every closest statement limits its claim with a word the sentence drops (see _HEDGES)."""
    said = hedges(sentence)
    return bool(closest) and all(s.hedges - said for s in closest)


def _prefixes(words: list[str]) -> set[str]:
    # Five letters: "vaccinated" and "vaccine", "shipping" and "shipped" meet; short words stay whole.
    return {w[:5] for w in words}


def addresses(sentence: str, question: str) -> bool:
    """Does the sentence take up the question at all (a word of the question in it)? A question without content words
    ("why?") is taken up by anything."""
    asked = _prefixes(content_words(question))
    return not asked or bool(asked & _prefixes(content_words(sentence)))


# A capitalised word that does not open its sentence (or a clause after a colon or quote): a name of a place, brand,
# person or product, or an acronym.
_NAME_RE = re.compile(r"(?<![.!?:\"\u201c(]\s)(?<![\"\u201c(*_])(?<!^)\b[A-Z][A-Za-z]*[A-Z0-9]?[a-z0-9]*\b")


def names(sentence: str) -> list[str]:
    """The names a sentence uses (as content words), which, like its figures, only its source can vouch for."""
    text = CITATION_RE.sub("", sentence).strip()
    out = []
    for m in _NAME_RE.finditer(text):
        word = m.group(0).lower()
        if word not in _STOPWORDS and len(word) > 1:
            out.append(_stem(word))
    return out


def _has_phrase(phrase: str, source: str) -> bool:
    pattern = r"(?<![\d.,])" + re.escape(phrase).replace(r"\ ", r"\s+") + r"(?![\d])"
    return re.search(pattern, _clock(source), re.IGNORECASE) is not None


def sentence_support(
    sentence: str,
    source: str,
    *,
    foreign: frozenset[str] | set[str] = frozenset(),
    vocab: set[str] | None = None,
    statements: list[Statement] | None = None,
) -> float:
    """Share of the sentence's content words found in the source; 0 if any figure in it is not in the source, if it
    brings in a `foreign` word (one the source lacks but another source or the question has), if it says "yes" where
    the source does not, or if it turns around or overstates what the source's closest statements say.
    `vocab`, `statements`: the source's content words and claims(source), when the caller has them already."""
    words = content_words(sentence)
    if not words:
        return 0.0
    if any(not _has_phrase(p, source) for p in numeric_phrases(sentence)):
        return 0.0
    if vocab is None:
        vocab = set(content_words(source))
    if any(w not in vocab and w in foreign for w in words):
        return 0.0
    # "We have stores in Denver, Portland and Boston" from an entry naming two of them: three words of four are the
    # source's, but the one name that is not is the claim.
    if any(n not in vocab for n in names(sentence)):
        return 0.0
    # "Yes, your pets can get the vaccine" from an entry that only names pets among allergies: a yes is the source's
    # to give, not an inference of the model's.
    if "yes" in words and "yes" not in vocab:
        return 0.0
    statements = claims(source) if statements is None else statements
    # The source statements the sentence rests on, found once for the three checks that compare it with them.
    closest = _closest(set(words), statements)
    if polarity_conflict(sentence, closest) or overstates(sentence, closest) or transplants(words, closest, statements):
        return 0.0
    return sum(1 for w in words if w in vocab) / len(words)


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_BREAK.split(text) if s.strip()]


@dataclass
class Grounded:
    text: str
    # 1-based source numbers the kept text relies on, in order of first use.
    used: list[int] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


class SentenceJudge:
    """The grounding rules for one sentence at a time, so an answer can be checked as it streams.

    A sentence may word things its own way, but not with words taken from another source or from the question that
    its source does not have: "Express shipping is free for US orders using our prepaid label" is the return-shipping
    source with "express" put in from the question, a claim none of the sources makes. Fragments and repeats are
    neither kept nor held against the answer.
    """

    def __init__(self, sources: list[str], *, min_support: float, min_words: int = 2, question: str = ""):
        self.sources = sources
        self.min_support = min_support
        self.min_words = min_words
        self.vocabs = [set(content_words(src)) for src in sources]
        self.statements = [claims(src) for src in sources]
        asked = set(content_words(question))
        self.foreign = [
            asked.union(*(v for j, v in enumerate(self.vocabs) if j != i)) - self.vocabs[i] for i in range(len(sources))
        ]
        self.kept: list[str] = []
        self.used: list[int] = []
        self._seen: set[tuple[str, ...]] = set()
        self._said: set[str] = set()

    def judge(self, sentence: str) -> tuple[str, str, list[int]]:
        """-> ("keep", the sentence without citation markers, the source numbers it rests on), ("skip", ...) for a
        fragment or a repeat, or ("drop", ...) when no source supports it. Nothing is recorded yet (see accept)."""
        cited = [int(n) for n in CITATION_RE.findall(sentence) if 1 <= int(n) <= len(self.sources)]
        plain = CITATION_RE.sub("", sentence).strip()
        key = tuple(content_words(plain))
        if len(key) < self.min_words or key in self._seen or (self.kept and set(key) <= self._said):
            # Fragments (e.g. cut off by the token limit) and repetition loops ("We have stores in Denver. We have
            # stores in Denver, Portland.") add nothing.
            return "skip", plain, []
        if len(set(key)) * 2 <= len(key):
            # Every word said twice over says nothing: "The COVID-19 vaccine is a COVID-19 vaccine."
            return "skip", plain, []
        if plain.rstrip("*_ ").endswith("?"):
            # A question asserts nothing a source could support: a small model's questions are its sources' own
            # questions said back ("What is the update on the J&J vaccine?"), not an answer.
            return "skip", plain, []
        scores = [
            sentence_support(
                plain, src, foreign=self.foreign[i], vocab=self.vocabs[i], statements=self.statements[i]
            )
            for i, src in enumerate(self.sources)
        ]
        best = max(range(len(self.sources)), key=lambda i: scores[i]) if self.sources else -1
        if best < 0 or scores[best] < self.min_support:
            return "drop", plain, []
        # Prefer the source the model cited when that source supports the sentence too.
        return "keep", plain, [n for n in cited if scores[n - 1] >= self.min_support] or [best + 1]

    def accept(self, plain: str, sources: list[int]) -> None:
        """Record a kept sentence: later repeats of it are skipped, and its sources are cited."""
        key = tuple(content_words(plain))
        self._seen.add(key)
        self._said.update(key)
        self.kept.append(plain)
        for n in sources:
            if n not in self.used:
                self.used.append(n)

    def note(self, plain: str) -> None:
        """Record a sentence that was said but not kept, so that saying it again is a repeat."""
        self._seen.add(tuple(content_words(plain)))


def ground_answer(
    answer: str, sources: list[str], *, min_support: float, min_words: int = 2, question: str = ""
) -> Grounded:
    """Keep the sentences one source supports (figures verbatim), drop repeats and the rest, and cite them: the
    rules of SentenceJudge over a finished answer at once (the chat turn applies them a sentence at a time)."""
    judge = SentenceJudge(sources, min_support=min_support, min_words=min_words, question=question)
    dropped: list[str] = []
    for sentence in split_sentences(answer):
        verdict, plain, supporting = judge.judge(sentence)
        if verdict == "keep":
            judge.accept(plain, supporting)
        else:
            judge.note(plain)
            if verdict == "drop":
                dropped.append(sentence)
    # An answer that is half or mostly unsupported is a confused one: what survives would mislead by omission.
    if not judge.kept or len(judge.kept) <= len(dropped):
        return Grounded(text="", used=[], dropped=dropped)
    text = " ".join(judge.kept)
    return Grounded(text=f"{text} {''.join(f'[{n}]' for n in judge.used)}", used=judge.used, dropped=dropped)


def citation(n: int, hit: Any) -> dict[str, Any]:
    """Source `n` of an answer as the widget shows it."""
    return {
        "n": n,
        "chunk_id": hit.chunk_id,
        "source": hit.source,
        "entry_id": hit.entry_id,
        "title": hit.title,
        "url": hit.url,
    }
