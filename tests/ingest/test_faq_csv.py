"""FAQ CSV loader: valid files parse, every kind of bad file is refused with a message that says what is wrong."""

from __future__ import annotations

import random

import pytest

from ingest.loaders import loader_for, parse
from ingest.loaders.faq_csv import parse_faq_csv
from support_bot.core.errors import InvalidInput

from tests.conftest import FAQ


def _refused(data: bytes, filename: str = "kb.csv") -> str:
    with pytest.raises(InvalidInput) as info:
        parse_faq_csv(data, filename=filename)
    assert info.value.detail.startswith(f"{filename}: ")
    return info.value.detail


def test_fixture_parses_every_entry():
    entries = parse_faq_csv(FAQ.read_bytes(), filename="northwind_faq.csv")
    assert len(entries) == 11
    first = entries[0]
    assert (first.id, first.question) == ("ship-01", "How long does shipping take?")
    assert first.url == "https://northwind-bikes.example/help/shipping"
    assert entries[3].url is None
    assert 'Click "Forgot password"' in next(e for e in entries if e.id == "acc-01").answer


def test_bom_quoting_newlines_and_optional_url():
    data = (
        "\ufeffid,question,answer\r\n"
        '1,"Is it, really?","Yes.\r\nSecond line with ""quotes""."\r\n'
        "2,Plain question,Plain answer\r\n"
    ).encode("utf-8")
    entries = parse_faq_csv(data, filename="kb.csv")
    assert [e.id for e in entries] == ["1", "2"]
    assert entries[0].question == "Is it, really?"
    assert entries[0].answer == 'Yes.\nSecond line with "quotes".'
    assert entries[0].url is None


def test_header_is_case_and_space_insensitive_and_extra_columns_are_ignored():
    entries = parse_faq_csv(b" ID , Question ,ANSWER,notes\nx,q?,a.,internal\n", filename="kb.csv")
    assert entries[0].id == "x" and entries[0].answer == "a."


def test_missing_columns_are_named():
    detail = _refused(b"id,question\n1,What?\n")
    assert "missing column(s) answer" in detail
    detail = _refused(b"key,q,a\n1,What?,That.\n")
    assert "id, question, answer" in detail and "'key'" in detail


def test_latin1_is_refused_as_not_utf8():
    data = "id,question,answer\n1,Où est ma commande?,Elle arrive bientôt.\n".encode("latin-1")
    detail = _refused(data)
    assert "not UTF-8" in detail and "line 2" in detail


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_is_refused_with_its_name(encoding):
    detail = _refused("id,question,answer\n1,Why?,Because.\n".encode(encoding))
    assert "UTF-16" in detail


@pytest.mark.parametrize("data", [b"", b"   \n\r\n", b"\xef\xbb\xbf", b",,,\n,,\n"])
def test_empty_files_are_refused(data):
    assert "empty" in _refused(data)


def test_header_without_rows_is_refused():
    assert "no rows" in _refused(b"id,question,answer,url\n")


def test_binary_junk_is_refused():
    junk = random.Random(7).randbytes(100_000)
    detail = _refused(junk)
    assert "binary" in detail or "not UTF-8" in detail


def test_control_character_junk_is_refused():
    assert "binary" in _refused(("id,question,answer\n" + "\x01\x02\x03\x04" * 100).encode())


def test_text_junk_is_refused_for_missing_columns():
    junk = "".join(random.Random(3).choice("abcdefgh ;|") for _ in range(5000)).encode()
    assert "missing column(s)" in _refused(junk)


def test_empty_question_or_answer_names_the_row():
    detail = _refused(b"id,question,answer\n1,Fine?,Yes.\n2,,No question here.\n3,No answer?,\n")
    assert "row 2 (line 3) has an empty question" in detail
    assert "row 3 (line 4) has an empty answer" in detail


def test_duplicate_ids_are_refused():
    detail = _refused(b"id,question,answer\nA1,One?,One.\nA2,Two?,Two.\nA1,Again?,Again.\n")
    assert "repeats id 'A1' first used on line 2" in detail


def test_short_rows_and_broken_quoting_are_refused():
    assert "has 2 fields but the header has 3" in _refused(b"id,question,answer\n1,Only two\n")
    assert "malformed CSV" in _refused(b'id,question,answer\n1,"never closed,answer\n')


def test_only_web_links_are_accepted():
    detail = _refused(b"id,question,answer,url\n1,Q?,A.,javascript:alert(1)\n")
    assert "not an http(s) link" in detail


def test_many_problems_are_summarized():
    rows = "".join(f"{i},,answer\n" for i in range(10))
    detail = _refused(f"id,question,answer\n{rows}".encode())
    assert "(and 5 more problems)" in detail


def test_loader_is_chosen_by_extension():
    assert loader_for("Help Center.CSV") == ("faq_csv", ".csv")
    with pytest.raises(InvalidInput, match="unsupported file type .xlsx"):
        loader_for("faq.xlsx")
    with pytest.raises(InvalidInput, match="unsupported file type"):
        parse("notes", b"id,question,answer\n1,a,b\n")
