"""Find and redact personal data: e-mail, phone, payment card, IBAN and government id numbers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PII_KINDS: frozenset[str] = frozenset({"email", "phone", "card", "iban", "gov_id"})

PLACEHOLDERS: dict[str, str] = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "card": "[CARD]",
    "iban": "[IBAN]",
    "gov_id": "[ID]",
}


@dataclass(frozen=True)
class Finding:
    """One piece of personal data: its kind and character span in the scanned text."""

    kind: str
    start: int
    end: int


@dataclass
class RedactionResult:
    """Redacted text and what was found in the original (spans refer to the original text)."""

    text: str
    found: list[Finding] = field(default_factory=list)


_EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b")

# 13-19 digits, optionally grouped by single spaces or dashes (how people type card numbers).
_CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")

# Country code, two check digits, then 11-30 alphanumerics; people often type them in groups of four.
_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", re.IGNORECASE)

# Registered IBAN lengths per country; an unknown country or wrong length is not an IBAN.
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}

# US SSN written with dashes or spaces; area 000/666/9xx, group 00 and serial 0000 are never issued.
_SSN_RE = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
# Nine bare digits are only an SSN when the customer says so.
_SSN_BARE_RE = re.compile(
    r"\b(?:ssn|social security(?: number| no\.?| #)?)\s*(?:is|:|#|number|no\.?)?\s*"
    r"(?P<num>(?!000|666|9\d\d)\d{3}(?!00)\d{2}(?!0000)\d{4})\b",
    re.IGNORECASE,
)
# UK National Insurance number: two letters (a few never used), six digits, suffix A-D.
_NINO_RE = re.compile(
    r"\b(?![DFIQUV])[A-Z](?![DFIOQUV])[A-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)

# Formatted numbers: +country code, (area) code, or separators in the usual groupings.
_PHONE_FORMATTED_RE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"  # +44 20 7946 0958, +1 (555) 123-4567
    r"|\(\d{2,4}\)[ .-]?\d{3,4}[ .-]?\d{3,4}"  # (555) 123-4567
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567
    r"|0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}"  # 020 7946 0958, 0151-496-0123
    r")(?![\w])"
)
# Bare digit runs are order numbers as often as phones: only with a phone word just before them.
_PHONE_CONTEXT_RE = re.compile(
    r"\b(?:phone|mobile|cell|tel|telephone|ph|call me(?: on| at)?|whatsapp|sms|text me(?: on| at)?|contact(?: number)?)"
    r"\b[^\d\n]{0,25}?(?P<num>\+?\d{10,13})\b",
    re.IGNORECASE,
)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum used by payment card numbers."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616 check: registered length for the country and mod-97 of the rearranged number equal to 1."""
    iban = re.sub(r"\s+", "", candidate).upper()
    if len(iban) < 15 or not iban.isalnum():
        return False
    expected = _IBAN_LENGTHS.get(iban[:2])
    if expected is None or len(iban) != expected or not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def _find_ibans(text: str) -> list[Finding]:
    found = []
    for m in _IBAN_RE.finditer(text):
        # The loose pattern runs on into following words ("... 3000 please"); cut it at the country's length.
        expected = _IBAN_LENGTHS.get(m.group()[:2].upper())
        if expected is None:
            continue
        count = 0
        end = m.start()
        for i in range(m.start(), m.end()):
            if text[i] != " ":
                count += 1
            if count == expected:
                end = i + 1
                break
        if count != expected or (end < len(text) and text[end].isalnum()):
            continue
        if iban_valid(text[m.start() : end]):
            found.append(Finding("iban", m.start(), end))
    return found


def _card_like(digits: str) -> bool:
    # Luhn alone passes 10% of random digit runs (order numbers, tracking ids); issuer prefixes cut that further.
    if not 13 <= len(digits) <= 19 or not luhn_valid(digits):
        return False
    return digits[0] in "23456" or digits[:2] in {"34", "37", "36", "38", "35", "62", "81"}


def normalize_value(kind: str, raw: str) -> str:
    """A canonical form of a found value, so the same number written two ways compares equal."""
    if kind == "email":
        return raw.strip().lower()
    if kind in {"iban", "gov_id"}:
        return re.sub(r"[\s-]+", "", raw).upper()
    digits = re.sub(r"\D", "", raw)
    if kind == "phone" and len(digits) > 10:
        # Compare national significant numbers: +44 20... and 020... are the same line.
        return digits[-10:]
    return digits


def find_pii(text: str, *, kinds: set[str] | frozenset[str] | None = None) -> list[Finding]:
    """Non-overlapping findings in text order; checksummed kinds win over looser ones on the same span."""
    wanted = PII_KINDS if kinds is None else frozenset(kinds)
    unknown = wanted - PII_KINDS
    if unknown:
        raise ValueError(f"unknown PII kinds: {sorted(unknown)} (known: {sorted(PII_KINDS)})")
    candidates: list[Finding] = []
    if "email" in wanted:
        candidates += [Finding("email", m.start(), m.end()) for m in _EMAIL_RE.finditer(text)]
    if "iban" in wanted:
        candidates += _find_ibans(text)
    if "card" in wanted:
        for m in _CARD_RE.finditer(text):
            if _card_like(re.sub(r"\D", "", m.group())):
                candidates.append(Finding("card", m.start(), m.end()))
    if "gov_id" in wanted:
        candidates += [Finding("gov_id", m.start(), m.end()) for m in _SSN_RE.finditer(text)]
        candidates += [Finding("gov_id", m.start("num"), m.end("num")) for m in _SSN_BARE_RE.finditer(text)]
        candidates += [Finding("gov_id", m.start(), m.end()) for m in _NINO_RE.finditer(text)]
    if "phone" in wanted:
        for m in _PHONE_FORMATTED_RE.finditer(text):
            if 7 <= sum(ch.isdigit() for ch in m.group()) <= 15:
                candidates.append(Finding("phone", m.start(), m.end()))
        candidates += [Finding("phone", m.start("num"), m.end("num")) for m in _PHONE_CONTEXT_RE.finditer(text)]
    priority = {"email": 0, "iban": 1, "card": 2, "gov_id": 3, "phone": 4}
    candidates.sort(key=lambda f: (priority[f.kind], -(f.end - f.start), f.start))
    chosen: list[Finding] = []
    for cand in candidates:
        if all(cand.end <= c.start or cand.start >= c.end for c in chosen):
            chosen.append(cand)
    chosen.sort(key=lambda f: f.start)
    return chosen


def redact(text: str, *, kinds: set[str] | None = None) -> RedactionResult:
    """Replace personal data with placeholders such as [EMAIL] and [CARD]; `kinds` limits what is redacted."""
    found = find_pii(text, kinds=kinds)
    if not found:
        return RedactionResult(text=text, found=[])
    parts: list[str] = []
    pos = 0
    for f in found:
        parts.append(text[pos : f.start])
        parts.append(PLACEHOLDERS[f.kind])
        pos = f.end
    parts.append(text[pos:])
    return RedactionResult(text="".join(parts), found=found)


def pii_values(text: str, *, kinds: set[str] | frozenset[str] | None = None) -> set[tuple[str, str]]:
    """The (kind, canonical value) pairs of the personal data in text."""
    return {(f.kind, normalize_value(f.kind, text[f.start : f.end])) for f in find_pii(text, kinds=kinds)}
