"""Undo the usual disguises (invisible characters, look-alike letters, leetspeak, base64/hex) before checking text."""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass, field

from support_bot.safety.lexicon import decode_rot13_or_reversed, english_share, gloss

# Invisible characters that survive copy-paste but split words for a keyword check.
_INVISIBLE = {
    0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F,
    0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0x2066, 0x2067, 0x2068, 0x2069,
    0x3164, 0xFEFF, 0xFFA0,
}
# Zero-width joiner/non-joiner are legitimate inside emoji sequences and some scripts; only between Latin letters
# are they a disguise.
_JOINERS = {0x200C, 0x200D}
_TAG_BASE = 0xE0000  # Unicode "tag" characters mirror ASCII and render as nothing: hidden text.

# Letters from other scripts that render like Latin ones (the ones seen in practice, not the whole Unicode table).
_CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g", "һ": "h",
    "ӏ": "l", "ь": "b", "п": "n", "г": "r",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y",
    "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W", "Ү": "Y",
    # Greek
    "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "γ": "y",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P",
    "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin extensions and symbols
    "ı": "i", "ȷ": "j", "ℓ": "l", "ſ": "s", "ꓲ": "I", "ꓳ": "O", "ꓴ": "U", "Ꭵ": "i", "ⅰ": "i", "ℹ": "i",
}
_CONFUSABLE_TABLE = str.maketrans(_CONFUSABLES)
_CONFUSABLE_RE = re.compile("[" + re.escape("".join(_CONFUSABLES)) + "]")
_INVISIBLE_RE = re.compile("[" + "".join(f"\\u{cp:04x}" for cp in sorted(_INVISIBLE)) + "\\U000e0000-\\U000e007f]")

_LEET_TABLE = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i", "|": "l"}
)
# Candidate leet tokens: runs of letters, digits and the symbols leet uses (filtered in Python, which keeps the
# scan linear on long digit or letter runs).
_LEET_TOKEN_RE = re.compile(r"(?<![A-Za-z0-9@$!|])[A-Za-z0-9@$!|]{3,40}(?![A-Za-z0-9@$!|])")
_LEET_CHARS = frozenset("013457@$|")
# "i g n o r e" / "i.g.n.o.r.e": at least four single letters joined by one separator.
_SPACED_RE = re.compile(r"\b(?:[A-Za-z][ ._\-*]){3,}[A-Za-z]\b")
_SPACED_SHORT_RE = re.compile(r"\b(?:[A-Za-z][ ._\-*])+[A-Za-z]\b")
_B64_RE = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{20,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX_RE = re.compile(r"\b(?:[0-9a-fA-F]{2}[ :]?){12,}\b")
_WORD_RE = re.compile(r"\w+")
# Four or more lower-case words joined by dots or underscores (not a domain, file name or e-mail address).
_DOTTED_RE = re.compile(r"(?<![\w@/.])[a-z]{2,12}(?:[._][a-z]{2,12}){3,}(?![\w@/]|\.[a-z])")
_SPACES_RE = re.compile(r"[ \t\f\v]+")


@dataclass
class Normalized:
    """The text as a reader sees it, plus any decoded hidden text and what disguises were found."""

    text: str
    decoded: list[str] = field(default_factory=list)
    tricks: list[str] = field(default_factory=list)
    # An English word-for-word reading of a message in another language or in text-speak (see lexicon.py).
    gloss: str | None = None

    @property
    def variants(self) -> list[str]:
        """Texts worth checking: the cleaned text and each decoded payload."""
        return [self.text, *self.decoded]


def _printable_share(text: str) -> float:
    if not text:
        return 0.0
    good = sum(1 for ch in text if ch.isprintable() or ch in "\n\t")
    return good / len(text)


def _looks_like_language(text: str) -> bool:
    """Decoded bytes that read as words, not as binary noise or an id."""
    if len(text) < 8 or _printable_share(text) < 0.95:
        return False
    letters = sum(ch.isalpha() for ch in text)
    spaces = text.count(" ")
    return letters / len(text) > 0.6 and spaces >= 2


def _decode_base64(blob: str) -> str | None:
    raw = blob.rstrip("=")
    if len(raw) % 4 == 1:
        return None
    padded = raw + "=" * (-len(raw) % 4)
    try:
        data = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        text = data.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return text if _looks_like_language(text) else None


def _decode_hex(blob: str) -> str | None:
    digits = re.sub(r"[ :]", "", blob)
    if len(digits) % 2:
        return None
    try:
        text = bytes.fromhex(digits).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return text if _looks_like_language(text) else None


def _mixed_script_words(text: str) -> int:
    """Words that mix Latin letters with look-alikes from another script (real words never do)."""
    count = 0
    for word in _WORD_RE.findall(text):
        if len(word) < 3:
            continue
        has_latin = any("a" <= ch.lower() <= "z" for ch in word)
        has_confusable = any(ch in _CONFUSABLES for ch in word)
        if has_latin and has_confusable:
            count += 1
    return count


def _strip_invisible(text: str, tricks: list[str], decoded: list[str]) -> str:
    out: list[str] = []
    hidden: list[str] = []
    removed = 0
    n = len(text)
    for i, ch in enumerate(text):
        cp = ord(ch)
        if _TAG_BASE <= cp <= _TAG_BASE + 0x7F:
            if 0x20 <= cp - _TAG_BASE < 0x7F:
                hidden.append(chr(cp - _TAG_BASE))
            continue
        if cp in _INVISIBLE:
            if cp in _JOINERS:
                prev = text[i - 1] if i else ""
                nxt = text[i + 1] if i + 1 < n else ""
                if not (prev.isascii() and prev.isalpha() and nxt.isascii() and nxt.isalpha()):
                    out.append(ch)
                    continue
            removed += 1
            continue
        out.append(ch)
    if hidden:
        tricks.append("tag_characters")
        decoded.append("".join(hidden))
    if removed:
        tricks.append("invisible_characters")
    return "".join(out)


def normalize(text: str, *, decode: bool = True) -> Normalized:
    """Clean text for checking; with decode, also recover base64/hex/leet/spaced-out payloads."""
    tricks: list[str] = []
    decoded: list[str] = []
    cleaned = text
    if not text.isascii() and _INVISIBLE_RE.search(text):
        cleaned = _strip_invisible(text, tricks, decoded)
    if not cleaned.isascii():
        folded = unicodedata.normalize("NFKC", cleaned)
        # Fullwidth or "mathematical bold" letters are a classic keyword-filter dodge.
        styled = sum(1 for ch in cleaned if 0xFF01 <= ord(ch) <= 0xFF5E or 0x1D400 <= ord(ch) <= 0x1D7FF)
        if folded != cleaned and styled >= 3:
            tricks.append("styled_letters")
        if _CONFUSABLE_RE.search(folded):
            if _mixed_script_words(folded):
                tricks.append("homoglyphs")
            cleaned = folded.translate(_CONFUSABLE_TABLE)
        else:
            cleaned = folded
    if decode:
        # Before collapsing spaces: "i g n o r e   y o u r" keeps its word breaks in the wider gaps.
        spaced = [m.group() for m in _SPACED_RE.finditer(cleaned)]
        if spaced and max(len(s) for s in spaced) >= 9:
            tricks.append("spaced_letters")
            # Once a message is written letter by letter, short words ("a l l") are spaced out too.
            joined = _SPACED_SHORT_RE.sub(lambda m: re.sub(r"[ ._\-*]", "", m.group()), cleaned)
            decoded.append(_SPACES_RE.sub(" ", joined))
    cleaned = _SPACES_RE.sub(" ", cleaned)
    if decode:
        for m in _B64_RE.finditer(cleaned):
            blob = m.group()
            # Words and ids are long alphanumeric runs too; real base64 of text mixes case and digits.
            if blob.isalpha() and (blob.islower() or blob.isupper()):
                continue
            payload = _decode_base64(blob)
            if payload:
                tricks.append("base64")
                decoded.append(payload)
        for m in _HEX_RE.finditer(cleaned):
            payload = _decode_hex(m.group())
            if payload:
                tricks.append("hex")
                decoded.append(payload)
        regional = sum(1 for ch in cleaned if 0x1F1E6 <= ord(ch) <= 0x1F1FF)
        if regional >= 6:
            # Flag letters spell words once read one by one (two in a row render as a country flag).
            tricks.append("regional_indicators")
            spelled = "".join(
                chr(ord("a") + ord(ch) - 0x1F1E6) if 0x1F1E6 <= ord(ch) <= 0x1F1FF else ch for ch in cleaned
            )
            decoded.append(spelled)
        leety = [m.group() for m in _LEET_TOKEN_RE.finditer(cleaned) if _is_leet_word(m.group())]
        # One "b4" or "2nd" is ordinary writing; several leet words in a message is a disguise.
        if len(leety) >= 2:
            tricks.append("leetspeak")
            decoded.append(
                _LEET_TOKEN_RE.sub(
                    lambda m: m.group().translate(_LEET_TABLE) if _mixes_letters(m.group()) else m.group(), cleaned
                )
            )
        if not decoded:
            turned = decode_rot13_or_reversed(cleaned)
            if turned:
                tricks.append("rot13_or_reversed")
                decoded.append(turned)
        # Host names are dotted too; a disguised sentence is made of ordinary words.
        dotted = [d for d in _DOTTED_RE.findall(cleaned) if english_share(re.sub(r"[._]", " ", d)) >= 0.5]
        if dotted:
            # "reveal.your.system.prompt": words joined by dots or underscores instead of spaces.
            tricks.append("joined_words")
            decoded.append(_DOTTED_RE.sub(lambda m: re.sub(r"[._]", " ", m.group()), cleaned))
    english = None
    if decode:
        # Read before look-alike letters were folded to Latin too: Cyrillic words are words, not disguises.
        english = (gloss(text) if not text.isascii() else None) or gloss(cleaned)
    return Normalized(text=cleaned, decoded=decoded, tricks=tricks, gloss=english)


def _mixes_letters(token: str) -> bool:
    """Letters with leet digits or symbols: once a message is in leetspeak, such tokens are words ("4ll")."""
    return any(ch.isalpha() for ch in token) and any(ch in _LEET_CHARS for ch in token)


def _is_leet_word(token: str) -> bool:
    """A token whose digits/symbols stand for letters: letters on both sides or mostly letters, not an id."""
    letters = sum(ch.isalpha() for ch in token)
    if letters < 2 or not any(ch in _LEET_CHARS for ch in token):
        return False
    # Ids such as "abc123" or "x1000" put the digits in one block at an end; leet scatters them.
    stripped = token.strip("0123456789")
    if stripped.isalpha():
        return False
    translated = token.translate(_LEET_TABLE)
    return translated.isalpha()
