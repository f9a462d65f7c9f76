"""The lexical (BM25) side's words: lower-cased, stop-word-free and lightly stemmed, the same for index and query."""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
# Words that carry no topic in support questions; kept short so negations and question words still count.
_STOPWORDS = frozenset(
    """a an and are as at be been but by can could do does did for from had has have how i if in into is it its
    me my of on or our so such than that the their them then there these they this to us was we were what when
    where which who will with would you your yours i'm it's i've you're""".split()
)


def _stem(word: str) -> str:
    """A light English suffix stripper: enough to match plurals and common verb forms across questions."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, repl, min_len in (
        ("ies", "y", 5),
        ("sses", "ss", 5),
        ("ing", "", 6),
        ("ed", "", 5),
        ("es", "", 5),
        ("s", "", 4),
    ):
        if word.endswith(suffix) and len(word) >= min_len:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            if suffix == "es" and not word.endswith(("ches", "shes", "xes", "zes", "sses")):
                continue
            stem = word[: len(word) - len(suffix)] + repl
            # "running" -> "runn" -> "run": collapse a doubled final consonant left by -ing/-ed.
            if suffix in ("ing", "ed") and len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in "aeioulsz":
                stem = stem[:-1]
            return stem
    return word


def lexical_tokens(text: str) -> list[str]:
    """Lower-cased, stop-word-free, lightly stemmed words; the same function indexes and queries."""
    words = (w.replace("’", "'") for w in _WORD.findall(text.lower()))
    return [_stem(w) for w in words if w not in _STOPWORDS]
