"""Small talk and answers to the offer of a person, told apart from real questions."""

from __future__ import annotations

import pytest

from support_bot.chat.small_talk import REPLIES, answer_to_offer, small_talk


@pytest.mark.parametrize("text,kind", [
    ("hi", "greeting"), ("Hello there!", "greeting"), ("good morning", "greeting"), ("hey team", "greeting"),
    ("thanks, that helped!", "thanks"), ("Thank you so much", "thanks"), ("Great, thanks!", "thanks"),
    ("thx", "thanks"), ("ok thanks bye", "goodbye"), ("bye", "goodbye"), ("Goodbye, have a nice day",
    "goodbye"), ("ok", "ack"), ("cool", "ack"), ("that\u2019s great, thanks", "thanks"),
])
def test_small_talk_is_recognised_with_its_kind(text, kind):
    talk = small_talk(text)
    assert talk is not None and talk.kind == kind and talk.reply == REPLIES[kind]


@pytest.mark.parametrize("text", [
    "hi, where is my order?", "hello, how long does shipping take", "thanks for nothing", "help", "what?",
    "thanks, order 12345", "Is it free?", "", "   ", "hi " * 9, "hey, my zipper broke", "no", "yes please",
])
def test_anything_else_is_not_small_talk(text):
    assert small_talk(text) is None


@pytest.mark.parametrize("text,answer", [
    ("yes", "yes"), ("yes please", "yes"), ("Sure", "yes"), ("ok", "yes"), ("please do", "yes"), ("go ahead", "yes"),
    ("yes, connect me to a person", "yes"), ("yes I'd like that", "yes"),
    ("no", "no"), ("no thanks", "no"), ("nope", "no"), ("not now", "no"), ("no that's all, thanks", "no"),
    ("ok, no", "no"), ("No, I'm fine", "no"),
    ("yes, how much is shipping?", None), ("no, I asked about returns", None), ("what?", None), ("hi", None),
    ("yes 2", None), ("", None),
])
def test_answers_to_an_offer(text, answer):
    assert answer_to_offer(text) == answer
