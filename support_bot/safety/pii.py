"""Find and redact personal data: e-mail, phone, payment card, IBAN and government id numbers.

The patterns here only find candidates, written the way people type them; the libraries decide what they are:
`phonenumbers` whether a candidate can be a phone number (a known country code, a possible length), and `python-stdnum`
the Luhn check of card numbers, IBANs (each country's registered length and format, mod 97) and US SSNs (never-issued
areas, groups and serials). The UK National Insurance number stays a pattern: python-stdnum has no module for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn as stdnum_luhn
from stdnum.us import ssn as stdnum_ssn

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

# US SSN written with dashes or spaces (python-stdnum rules out the never-issued ones).
_SSN_RE = re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])")
# Nine bare digits are only an SSN when the customer says so.
_SSN_BARE_RE = re.compile(
    r"\b(?:ssn|social security(?: number| no\.?| #)?)\s*(?:is|:|#|number|no\.?)?\s*(?P<num>\d{9})\b",
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


# Regions for a number written without its +country code: the patterns' national formats are the US ones ("(555)
# 123-4567") and ones with a trunk 0 ("020 7946 0958"), whose lengths the UK's stand for.
_NATIONAL_REGIONS = ("US", "GB")


def _possible_phone(raw: str) -> bool:
    """Whether `raw` can be a whole phone number: a known country code and a possible length for it."""
    if raw.lstrip().startswith("+"):
        attempts: list[tuple[str, str | None]] = [(raw, None)]
    else:
        attempts = [(raw, region) for region in _NATIONAL_REGIONS]
        digits = re.sub(r"\D", "", raw)
        if len(digits) > 10:
            attempts.append(("+" + digits, None))  # an international number typed without its +
    for text, region in attempts:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        # Possible, not valid: a number in a range not assigned yet (or a fictional 555 one) is still redacted.
        if phonenumbers.is_possible_number_with_reason(number) == phonenumbers.ValidationResult.IS_POSSIBLE:
            return True
    return False


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum used by payment card numbers."""
    return digits.isdigit() and len(digits) >= 2 and stdnum_luhn.is_valid(digits)


def iban_valid(candidate: str) -> bool:
    """ISO 13616 check: the country's registered length and format, and mod-97 of the rearranged number equal to 1."""
    iban = re.sub(r"\s+", "", candidate)
    # Not check_country: that also looks the bank up in python-stdnum's bank lists, which miss newer banks.
    return len(iban) >= 15 and iban.isalnum() and stdnum_iban.is_valid(iban, check_country=False)


def _find_ibans(text: str) -> list[Finding]:
    found = []
    for m in _IBAN_RE.finditer(text):
        # The loose pattern runs on into following words ("... 3000 please"): the IBAN ends at the group end where the
        # text so far checks out (each country has one length).
        for end in range(m.start() + 15, m.end() + 1):
            if (end == m.end() or text[end] == " ") and iban_valid(text[m.start() : end]):
                found.append(Finding("iban", m.start(), end))
                break
    return found


def _ssn_valid(candidate: str) -> bool:
    # python-stdnum takes dashes or no separator; people also use spaces.
    return stdnum_ssn.is_valid(re.sub(r"\D", "", candidate))


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
        candidates += [
            Finding("gov_id", m.start(), m.end()) for m in _SSN_RE.finditer(text) if _ssn_valid(m.group())
        ]
        candidates += [
            Finding("gov_id", m.start("num"), m.end("num"))
            for m in _SSN_BARE_RE.finditer(text)
            if _ssn_valid(m.group("num"))
        ]
        candidates += [Finding("gov_id", m.start(), m.end()) for m in _NINO_RE.finditer(text)]
    if "phone" in wanted:
        candidates += [
            Finding("phone", m.start(), m.end())
            for m in _PHONE_FORMATTED_RE.finditer(text)
            if _possible_phone(m.group())
        ]
        candidates += [
            Finding("phone", m.start("num"), m.end("num"))
            for m in _PHONE_CONTEXT_RE.finditer(text)
            if _possible_phone(m.group("num"))
        ]
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
