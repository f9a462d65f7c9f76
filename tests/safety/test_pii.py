"""PII finding and redaction on realistic customer text."""

from __future__ import annotations

import pytest

from support_bot.safety.pii import Finding, find_pii, iban_valid, luhn_valid, normalize_value, pii_values, redact


def kinds(text: str) -> list[str]:
    return [f.kind for f in redact(text).found]


@pytest.mark.parametrize(
    "number, valid",
    [("4242424242424242", True), ("4242424242424241", False), ("378282246310005", True), ("5555555555554444", True),
     ("6011111111111117", True), ("1234567812345678", False)],
)
def test_luhn(number, valid):
    assert luhn_valid(number) is valid


def test_card_numbers_are_redacted_only_when_luhn_valid():
    text = "my card is 4242 4242 4242 4242, the old one was 4242-4242-4242-4241"
    result = redact(text)
    assert result.text == "my card is [CARD], the old one was 4242-4242-4242-4241"
    assert result.found == [Finding("card", 11, 30)]
    assert text[11:30] == "4242 4242 4242 4242"


def test_last_four_digits_and_order_numbers_are_not_pii():
    for text in (
        "my card ending 4242 was charged twice",
        "order 1234567890123 hasn't shipped",  # 13 digits, Luhn-invalid
        "tracking number 1Z999AA10123456784",
        "the charge was 1500 on 6518",
    ):
        assert redact(text).found == [], text


def test_amex_with_its_own_grouping():
    assert redact("amex 3782 822463 10005 please").text == "amex [CARD] please"


@pytest.mark.parametrize(
    "iban, valid",
    [("GB82 WEST 1234 5698 7654 32", True), ("DE89370400440532013000", True), ("FR1420041010050500013M02606", True),
     ("GB82 WEST 1234 5698 7654 33", False), ("DE89370400440532013001", False), ("XX82WEST12345698765432", False),
     ("GB82WEST123456987654", False)],
)
def test_iban_checksum(iban, valid):
    assert iban_valid(iban) is valid


def test_iban_redaction_stops_at_the_country_length():
    result = redact("refund to IBAN GB82 WEST 1234 5698 7654 32 please, thanks")
    assert result.text == "refund to IBAN [IBAN] please, thanks"
    assert redact("iban de89370400440532013000.").text == "iban [IBAN]."
    assert redact("IBAN GB82 WEST 1234 5698 7654 33 (typo)").found == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("call me at (555) 123-4567", "call me at [PHONE]"),
        ("my mobile is +44 20 7946 0958", "my mobile is [PHONE]"),
        ("reach me on 555.123.4567 after 5", "reach me on [PHONE] after 5"),
        ("tel 020 7946 0958", "tel [PHONE]"),
        ("my phone number 9566847231", "my phone number [PHONE]"),
        ("+1 555 010 9999 is my cell", "[PHONE] is my cell"),
    ],
)
def test_phone_formats(text, expected):
    assert redact(text).text == expected


def test_bare_digit_runs_need_a_phone_word():
    assert redact("order 9566847231 is late").found == []
    assert kinds("whatsapp me: 9566847231") == ["phone"]


def test_emails():
    result = redact("write to Jane.Doe+orders@mail.example.co.uk or support@acme.com!")
    assert result.text == "write to [EMAIL] or [EMAIL]!"
    assert redact("the price is 5@home offer").found == []


def test_us_ssn_and_uk_national_insurance():
    assert redact("my SSN is 123-45-6789").text == "my SSN is [ID]"
    assert redact("ssn: 123456789").text == "ssn: [ID]"
    assert redact("my ni number is AB 12 34 56 C").text == "my ni number is [ID]"
    # Never-issued SSN areas and bare nine digits without context are left alone.
    assert redact("ref 666-12-3456").found == []
    assert redact("invoice 123456789").found == []


def test_kinds_limit_what_is_redacted():
    text = "card 4242424242424242, mail a@b.io"
    assert redact(text, kinds={"email"}).text == "card 4242424242424242, mail [EMAIL]"
    with pytest.raises(ValueError):
        redact(text, kinds={"passport"})


def test_mixed_message_spans_refer_to_the_original():
    text = "Hi, I'm Ana (ana@example.org, +34 612 345 678). Card 5555 5555 5555 4444 was charged twice."
    result = redact(text)
    assert [f.kind for f in result.found] == ["email", "phone", "card"]
    spans = [text[f.start : f.end] for f in result.found]
    assert spans == ["ana@example.org", "+34 612 345 678", "5555 5555 5555 4444"]
    assert "ana@" not in result.text and "4444" not in result.text


def test_values_compare_across_formats():
    assert normalize_value("phone", "+44 20 7946 0958") == normalize_value("phone", "020 7946 0958")
    assert pii_values("card 4242-4242-4242-4242") == pii_values("4242424242424242 on file")
    assert find_pii("") == []
