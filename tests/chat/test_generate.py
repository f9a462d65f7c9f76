"""Where a small model's answer ends: it re-lists its sources or repeats itself once it has answered."""

from __future__ import annotations

from support_bot.chat.generate import answer_is_over, trim_generated
from support_bot.chat.grounding import repetition_start, source_echo_start


def test_a_relisting_of_the_numbered_sources_ends_the_answer():
    raw = (
        "No, Acme gift cards do not expire and have no fees. You can check the balance on our gift card page.\n\n"
        "[4] Which payment methods do you accept?\nWe accept credit and debit cards, PayPal and Apple Pay."
    )
    assert trim_generated(raw) == (
        "No, Acme gift cards do not expire and have no fees. You can check the balance on our gift card page."
    )
    assert source_echo_start("Gift cards never expire [1]. Is there anything else?") is None
    assert source_echo_start("[1] Gift cards never expire.\n[2] Returns are free.") is None
    assert source_echo_start("Sure.\n  [12] How do I reset my password?  \nClick Sign in.") == len("Sure.\n")


def test_a_repeated_sentence_ends_the_answer_where_the_loop_began():
    # The small model's real loop after answering.
    raw = (
        "We accept credit and debit cards, PayPal and Apple Pay.\n"
        "We also accept PayPal, which is a payment method that is not a credit or debit card.\n"
        "We also accept PayPal, which is a payment method that is not a credit or debit card.\n"
        "We also accept PayPal, which is"
    )
    assert trim_generated(raw) == (
        "We accept credit and debit cards, PayPal and Apple Pay.\n"
        "We also accept PayPal, which is a payment method that is not a credit or debit card."
    )
    assert answer_is_over(raw)
    # An unfinished sentence is not a repeat yet, and short ones ("Yes.") may recur.
    assert repetition_start("Refunds take 5 days [1]. Refunds take 5 days") is None
    assert repetition_start("Yes. We ship there. Yes. Returns are free.") is None
    assert repetition_start("Refunds take 5 business days [1]. Refunds take 5 business days [2]. More.") == len(
        "Refunds take 5 business days [1]. "
    )
    assert not answer_is_over("Standard shipping takes 3 to 5 business days [1].")
