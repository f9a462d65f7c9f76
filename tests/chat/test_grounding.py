"""The ground step: sentences kept only where a source supports them (figures verbatim), cited."""

from __future__ import annotations

from support_bot.chat.grounding import ground_answer, numeric_phrases
from support_bot.chat.verify import AnswerVerifier, verify_whole
from tests.chat.hits import HITS, ScoredHit


def ground(settings, raw: str, hits) -> tuple[str, list[dict]]:
    """A finished answer through the chat turn's own checks (grounding only): (the reply text, its citations)."""
    verifier = verify_whole(
        AnswerVerifier(settings, hits, None, question="", customer_texts=[], system_prompt="", canary=""), raw
    )
    return verifier.text, verifier.ending()[1]


def test_ground_keeps_valid_citations_and_drops_invented_ones(settings):
    answer, cites = ground(settings, "Gift cards never expire [2][5].", HITS)
    assert answer == "Gift cards never expire. [2]"
    assert [(c["n"], c["entry_id"]) for c in cites] == [(2, "gift-01")]


def test_ground_credits_the_source_an_uncited_answer_uses(settings):
    answer, cites = ground(settings, "Gift cards never expire.", HITS)
    assert answer == "Gift cards never expire. [2]"
    assert [c["entry_id"] for c in cites] == ["gift-01"]


def test_ground_falls_back_to_the_source_answer_when_unsupported(settings):
    answer, cites = ground(settings, "We sell spaceships at half price [1].", HITS)
    assert answer.endswith("Returns within 30 days. [1]")
    assert [c["entry_id"] for c in cites] == ["ret-01"]


REFUNDS = (
    "What is your return policy?\nYou can return unused items in their original packaging within 30 days of delivery "
    "for a full refund.",
    "How long do refunds take?\nRefunds are issued to your original payment method within 5 business days after we "
    "receive the return. Your bank may take another 2 to 3 days to show it.",
    "How long does shipping take?\nStandard shipping takes 3 to 5 business days within the continental US.",
)


def test_figures_must_appear_verbatim_in_the_supporting_source():
    # A small model's real output: right words, wrong figures, then a repetition loop.
    answer = (
        "Refunds take 3 to 5 business days to arrive. You can return any item within 30 days of delivery for a full "
        "refund.\nRefunds are issued to your original payment method within 5 business days after we receive the "
        "return.\nRefunds are issued to your original payment method within 10 business days after we receive the "
        "return.\nRefunds are issued to your original payment method within 24 hours after we receive the return.\n"
        "Refunds are issued to your original payment method within 24 hours after we receive the return.\nRefunds"
    )
    grounded = ground_answer(answer, list(REFUNDS), min_support=0.75)
    # Three wrong sentences against two right ones: the whole answer is distrusted.
    assert grounded.text == "" and grounded.used == []
    assert any("3 to 5" in d for d in grounded.dropped) and any("24 hours" in d for d in grounded.dropped)
    assert sum("24 hours" in d for d in grounded.dropped) == 1


def test_a_mostly_supported_answer_keeps_its_supported_sentences():
    answer = (
        "You can return any item within 30 days of delivery for a full refund. Refunds are issued to your original "
        "payment method within 5 business days after we receive the return. Refunds arrive within 24 hours."
    )
    grounded = ground_answer(answer, list(REFUNDS), min_support=0.75)
    assert grounded.text == (
        "You can return any item within 30 days of delivery for a full refund. Refunds are issued to your original "
        "payment method within 5 business days after we receive the return. [1][2]"
    )
    assert grounded.used == [1, 2] and grounded.dropped == ["Refunds arrive within 24 hours."]


def test_numeric_phrases_keep_ranges_and_units():
    assert numeric_phrases("Costs $14.95, ships in 3 to 5 days, 20% off, 1-2 weeks") == [
        "$14.95", "3 to 5", "20%", "1-2"
    ]


def test_decimals_do_not_split_sentences():
    source = "How much does shipping cost?\nExpress shipping costs $14.95 on any order."
    grounded = ground_answer("Express shipping costs $14.95 on any order [1].", [source], min_support=0.75)
    assert grounded.text == "Express shipping costs $14.95 on any order. [1]"
    assert ground_answer("Express shipping costs $12.95.", [source], min_support=0.75).text == ""


def test_nothing_supported_gives_empty_text():
    grounded = ground_answer("We sell spaceships at half price.", list(REFUNDS), min_support=0.75)
    assert grounded.text == "" and grounded.used == []


SHIPPING = (
    "How long does shipping take?\nStandard shipping takes 3 to 5 business days within the continental US. Express "
    "shipping arrives in 1 to 2 business days. Orders placed before 2 pm Eastern ship the same day.",
    "How much does shipping cost?\nStandard shipping is free on orders over $50; below that it costs $5.95. Express "
    "shipping costs $14.95 on any order.",
    "Is return shipping free?\nReturn shipping is free for US orders using our prepaid label. International returns "
    "are shipped at the customer's expense.",
)


def test_a_word_put_in_from_the_question_or_another_source_is_not_supported():
    # The small model's real answer to "what about express?": the return-shipping source with "express" put in.
    answer = (
        "Express shipping is free for US orders using our prepaid label. International returns are shipped at the "
        "customer's expense. [3]"
    )
    grounded = ground_answer(answer, list(SHIPPING), min_support=0.75, question="what about express?")
    assert grounded.text == "" and grounded.dropped[0].startswith("Express shipping is free")
    # Without the question, "express" still comes from the other shipping sources.
    assert ground_answer(answer, list(SHIPPING), min_support=0.75).text == ""
    # The source's own claim, in the model's words, stands.
    fine = ground_answer(
        "Return shipping is free for US orders with our prepaid label [3]. International returns are shipped at the "
        "customer's expense [3].", list(SHIPPING), min_support=0.75, question="is return shipping free?",
    )
    assert fine.used == [3] and fine.text.startswith("Return shipping is free for US orders with our prepaid label.")


def test_an_answer_half_unsupported_is_distrusted_whole():
    answer = "Standard shipping takes 3 to 5 business days. Our drones deliver pizza to the moon overnight."
    grounded = ground_answer(answer, list(SHIPPING), min_support=0.75)
    assert grounded.text == "" and grounded.dropped == ["Our drones deliver pizza to the moon overnight."]


STORES = (
    "What are your store opening hours?\nOur stores are open Monday to Saturday from 9 am to 8 pm and Sunday from 10 am "
    "to 6 pm local time.",
    "Where are your stores?\nWe have stores in Denver, Portland, Seattle and Salt Lake City. Store addresses and "
    "directions are on our store locator page.",
)


def test_sentences_that_only_repeat_what_was_said_are_dropped():
    # The small model's real loop, answering from the second source.
    answer = (
        "We also have stores in Denver, Portland, Seattle, and Salt Lake City. We have stores in Denver, Portland, and "
        "Seattle. We have stores in Salt Lake City. We have stores in Denver, Portland, [2]"
    )
    grounded = ground_answer(answer, list(STORES), min_support=0.75)
    assert grounded.text == "We also have stores in Denver, Portland, Seattle, and Salt Lake City. [2]"


def test_an_answer_from_a_source_far_below_the_best_match_gives_the_best_match(settings):
    hits = [
        ScoredHit("c1", "faq", "store-02", "What are your store opening hours?", STORES[0],
                  STORES[0].split("\n", 1)[1], None, 0.92),
        ScoredHit("c2", "faq", "store-01", "Where are your stores?", STORES[1], STORES[1].split("\n", 1)[1], None, 0.5),
    ]
    answer, cites = ground(settings, "We have stores in Denver, Portland, Seattle and Salt Lake City [2].", hits)
    assert answer.endswith(STORES[0].split("\n", 1)[1] + " [1]") and [c["entry_id"] for c in cites] == ["store-02"]
    # A second source all but tied with the best one (within retrieval.max_source_gap) is a fair basis for the answer.
    hits[1].score = 0.9
    answer, cites = ground(settings, "We have stores in Denver, Portland, Seattle and Salt Lake City [2].", hits)
    assert [c["entry_id"] for c in cites] == ["store-01"]
